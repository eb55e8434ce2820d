# kago serve demo: two sites on the default busybox rootfs (scripts/mkrootfs builds it).
#   build/kago serve --config examples/serve
#   curl -H 'Host: static.localhost' 127.0.0.1:8080/
#   curl -H 'Host: cgi.localhost' '127.0.0.1:8080/cgi-bin/hello?name=kago'
# Each instance runs in its own namespaces with a writable overlay over the shared read-only
# rootfs, so the sites below write their pages at start-up and nothing touches the rootfs.

Kago.app "static" do |a|
  a.hosts "static.localhost", "www.static.localhost"
  a.container do |c|
    c.rootfs "/var/lib/kago/rootfs/busybox", overlay: "16M"
    c.command "/bin/sh", "-c",
              "mkdir -p /srv/www && echo '<h1>hello from kago</h1>' > /srv/www/index.html && " \
              "exec /usr/sbin/httpd -f -p 8080 -h /srv/www"
    c.cgroup cpu: "50%", memory: "64M", pids: 64
    c.init   # a tiny PID 1 forwards SIGTERM, so a drained instance stops at once
  end
  a.port 8080
  a.lifetime "20m"
  a.idle_timeout "5m"
  a.min_instances 0
  a.max_instances 4
  a.concurrency 20
  a.start_timeout "10s"
  a.stop_grace "2s"
end

Kago.app "cgi" do |a|
  a.hosts "cgi.localhost"
  a.container do |c|
    c.rootfs "/var/lib/kago/rootfs/busybox", overlay: "16M"
    c.command "/bin/sh", "-c", <<~'SH'
      mkdir -p /srv/www/cgi-bin
      cat > /srv/www/cgi-bin/hello <<'CGI'
      #!/bin/sh
      echo "Content-Type: text/plain"
      echo
      echo "hello ${QUERY_STRING#name=} from a CGI script in $(hostname), pid $$"
      CGI
      chmod +x /srv/www/cgi-bin/hello
      exec /usr/sbin/httpd -f -p 8080 -h /srv/www
    SH
    c.cgroup cpu: "50%", memory: "64M", pids: 64
    c.init   # a tiny PID 1 forwards SIGTERM, so a drained instance stops at once
  end
  a.port 8080
  a.idle_timeout "1m"
  a.max_instances 2
  a.stop_grace "2s"
end
