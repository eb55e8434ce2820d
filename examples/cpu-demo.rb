# The seed's demo: a container computes while its CPU limit moves 30% -> 20% -> 50% of one core.
#   kago run examples/cpu-demo.rb                 # phases of 5 s
#   kago run examples/cpu-demo.rb --set phase=3   # phases of 3 s
# Watch it with `kago stats cpu-demo` (or the cgroup's cpu.cfs_quota_us / cpu.max).
phase = Kago.set("phase", "5").to_f

Kago.container "cpu-demo" do |c|
  c.rootfs     "/var/lib/kago/rootfs/busybox", overlay: true
  c.command    "/bin/sh", "-c", "while :; do :; done"
  c.namespaces :pid, :mount, :uts, :ipc, :net
  c.cgroup     cpu: "30%", memory: "64M", pids: 32

  c.after(phase)     { |ct| ct.update(cpu: "20%") }
  c.after(2 * phase) { |ct| ct.update(cpu: "50%") }
  c.after(3 * phase) { |ct| ct.stop(grace: "1s") }

  c.on_exit { |ct, status| puts "#{ct.name} ended (status #{status})" }
end
