# An app for `kago serve` (FastContainer): started on its first request, reused, scaled, stopped.
Kago.app "blog" do |a|
  a.hosts "blog.example", "www.blog.example"
  a.container do |c|
    c.rootfs  "/var/lib/kago/rootfs/busybox", overlay: true
    c.command "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/data"
    c.cgroup  cpu: "50%", memory: "128M", pids: 64
  end
  a.port            8080
  a.socket_activation false
  a.data            "/srv/sites/blog", to: "/data", readonly: true
  a.lifetime        "20m"
  a.idle_timeout    "5m"
  a.idle            :freeze, for: "10m"
  a.min_instances   0
  a.max_instances   4
  a.concurrency     20
  a.start_timeout   "10s"
  a.stop_grace      "10s"
  a.max_pending     1000
  a.max_body        "64M"
end
