# The guestbook (examples/app/guestbook.py) from an OCI image: a Debian 12 image built from Debian's
# packages by scripts/mkimage, with Python 3 and the app in its second layer. Its entries live outside
# the container, in a SQLite file in /data, bound from the host: every instance, old or new, sees them.
#
#   img=$(scripts/mkimage)                                            # once: about 1 min, then cached
#   build/kago image import docker-archive:$img/guestbook-docker.tar  # names it guestbook:latest
#   install -d -o 1000 -g 1000 /var/lib/kago/data/guestbook           # the image's user `app` is uid 1000
#   build/kago serve --config examples/serve
#   curl -H 'Host: guestbook.localhost' -d 'name=me&message=hello' 127.0.0.1:8080/
#   curl -H 'Host: guestbook.localhost' 127.0.0.1:8080/               # also /healthz, /?format=json
#
# Command, user (app), working directory, environment and port (ExposedPorts 8080/tcp) come from the
# image's config. scripts/demo does all of the above.

Kago.app "guestbook" do |a|
  a.hosts "guestbook.localhost"
  a.container do |c|
    c.image "guestbook:latest"
    c.cgroup cpu: "50%", memory: "128M", pids: 64
    c.init   # a tiny PID 1 forwards SIGTERM, so a drained instance stops at once
  end
  a.data "/var/lib/kago/data/guestbook", to: "/data"
  a.socket_activation   # kago binds its port before the app starts: the first request waits in the backlog
  a.idle_timeout "5m"
  a.max_instances 2
  a.stop_grace "2s"
end
