# Every element of the spec, for reference (docs/kagofile.md explains each).
Kago.container "everything" do |c|
  c.rootfs "/var/lib/kago/rootfs/busybox", readonly: true, overlay: "64M"
  c.command "/bin/sh", "-c", "id; hostname; cat /proc/self/status | grep Cap; sleep 2"
  c.env "LANG=C.UTF-8", MODE: "demo"
  c.cwd "/tmp"
  c.user 0, 0
  c.hostname "everything"
  c.namespaces :pid, :mount, :uts, :ipc, :net, :cgroup     # :user too, with uid_map/gid_map
  # c.join_namespace :net, "/proc/1234/ns/net"              # enter an existing one instead
  # c.uid_map 0, 100000, 65536; c.gid_map "0:100000:65536"
  c.tmpfs "/tmp", size: "16M"
  c.mount "/etc/hostname", "/etc/host-hostname", readonly: true
  c.mask "/proc/cpuinfo"
  c.readonly_path "/proc/interrupts"
  c.cgroup cpu: "50%", cpu_period: "100ms", cpu_weight: 100, memory: "64M", pids: 32, cpuset: "0"
  c.cgroup "memory.swappiness" => 0                        # a raw controller key, written as is
  c.rlimit :nofile, 1024, 4096
  c.rlimits nproc: 64, core: 0
  c.capabilities drop: [:net_raw, :mknod], add: [:sys_ptrace]
  c.seccomp do |s|                                         # added to kago's default filter
    s.errno :ptrace, :keyctl, errno: 1
    s.log :personality
  end
  c.no_new_privs true
  c.init
  c.stop_grace "5s"
end
