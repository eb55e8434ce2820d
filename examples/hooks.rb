# Hooks, timers, signal handlers and readiness around one small web server.
#   kago run examples/hooks.rb
#   kill -USR1 <supervisor pid>     # more CPU;  kill -USR2 <pid>: back to normal
#   kago reload web                 # after editing the limits below
Kago.container "web" do |c|
  c.rootfs  "/var/lib/kago/rootfs/busybox", overlay: true
  c.command "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/"
  c.init                                   # a tiny PID 1: signals reach httpd
  c.hostname "web"
  c.cgroup cpu: "25%", memory: "32M", pids: 16
  c.stop_grace "3s"

  c.before_start { |ct| puts "#{ct.name}: created as pid #{ct.pid}, not running yet" }
  c.after_start  { |ct| puts "#{ct.name}: running" }

  # Wait until httpd listens on 127.0.0.1:8080 inside the container's own network namespace.
  c.ready port: 8080, timeout: "10s" do |ct, ok|
    puts ok ? "#{ct.name}: ready" : "#{ct.name}: never listened; stopping"
    ct.stop unless ok
  end

  # Every 5 s: report, and give more memory when it runs close to its limit.
  c.every("5s") do |ct|
    s = ct.stats
    puts "#{ct.name}: cpu #{s[:cpu_usage_us] / 1000} ms, memory #{s[:memory_current] / 1024} KiB, pids #{s[:pids_current]}"
    ct.update(memory: "64M") if s[:memory_current] > 28 * 1024 * 1024
  end

  c.on_signal(:USR1) { |ct| ct.update(cpu: "100%") }
  c.on_signal(:USR2) { |ct| ct.update(cpu: "25%") }

  c.on_oom     { |ct| puts "#{ct.name}: out of memory" }
  c.on_exit    { |ct, status| puts "#{ct.name}: exited with #{status}" }
  c.on_failure { |ct, status| puts "#{ct.name}: FAILED (#{status})" }

  c.after("1h") { |ct| ct.stop }           # a lifetime
end
