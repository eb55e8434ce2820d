# The Kagofile DSL's argument handling, evaluated into every Kagofile's mruby state before the file.
# Ruby checks the shapes (arity, keywords, types) and names the method in every message; the C
# primitives (methods starting with "_", see dsl.c) parse values with libkago's shared parsers and fill
# struct kago_spec / struct kago_app.
module Kago
  class Spec; end
  class AppSpec; end
  class Seccomp; end
  class Container; end

  def self.container(name, &blk)
    c = _new_container(__str(name, "container name"))
    blk.call(c) if blk
    _finish(c, blk)
    c
  end

  def self.app(name, &blk)
    a = _new_app(__str(name, "app name"))
    blk.call(a) if blk
    _finish_app(a, blk)
    a
  end

  # `kago run Kagofile --set key=value`: the value as a String, or default when not given.
  def self.set(key, default = nil)
    v = _params[__str(key, "set")]
    v.nil? ? default : v
  end

  def self.params
    _params.dup
  end

  def self.read_file(path)
    File.read(__str(path, "read_file"))
  end

  def self.env(name, default = nil)
    v = ENV[__str(name, "env")]
    v.nil? ? default : v
  end

  def self.__str(v, what)
    return v if v.is_a?(String)
    return v.to_s if v.is_a?(Symbol)
    raise TypeError, "#{what}: expected a String, got #{v.class} (#{v.inspect})"
  end

  # A value handed to libkago's parsers: "64M", 30, 1.5, :max...
  def self.__val(v, what)
    return v if v.is_a?(String)
    return v.to_s if v.is_a?(Symbol) || v.is_a?(Integer) || v.is_a?(Float)
    raise TypeError, "#{what}: expected a String or a number, got #{v.class} (#{v.inspect})"
  end

  def self.__int(v, what, min = 0)
    raise TypeError, "#{what}: expected an Integer, got #{v.class} (#{v.inspect})" unless v.is_a?(Integer)
    raise ArgumentError, "#{what}: #{v} is below #{min}" if v < min
    v
  end

  def self.__bool(v, what)
    return v if v == true || v == false
    raise TypeError, "#{what}: expected true or false, got #{v.class} (#{v.inspect})"
  end

  # Durations: a String ("150ms", "5s", "20m", "1h30m") or a number of seconds.
  def self.__ms(v, what)
    if v.is_a?(Integer) || v.is_a?(Float)
      raise ArgumentError, "#{what}: negative duration #{v}" if v < 0
      return (v * 1000).round
    end
    raise TypeError, "#{what}: expected a duration like \"5s\" or a number of seconds, got #{v.class} (#{v.inspect})" unless v.is_a?(String)
    _duration(v, what)
  end

  def self.__list(args, what)
    args.flatten.map { |x| __str(x, what) }
  end
end

class Kago::Spec
  def name
    _name
  end

  def rootfs(path, readonly: nil, overlay: nil)
    _str("rootfs", Kago.__str(path, "rootfs"))
    _bool("readonly", Kago.__bool(readonly, "rootfs readonly:")) unless readonly.nil?
    if overlay == true || overlay == false
      _bool("overlay", overlay)
    elsif overlay.is_a?(String) || overlay.is_a?(Integer)
      _bool("overlay", true)
      _overlay_size(Kago.__val(overlay, "rootfs overlay:"))
    elsif !overlay.nil?
      raise TypeError, "rootfs: overlay: expected true, false or a size like \"64M\", got #{overlay.inspect}"
    end
    self
  end

  # image "NAME[:TAG]": the root is the image's layers (read-only, shared) under a writable layer of the
  # container's own; the image's config gives the command (Entrypoint + Cmd: `command` replaces Cmd),
  # env, working dir, user and stop signal wherever this block does not set them.
  def image(ref, overlay: nil)
    _image(Kago.__str(ref, "image"))
    _overlay_size(Kago.__val(overlay, "image overlay:")) unless overlay.nil?
    self
  end

  # overlay_dir "/srv/layers/web": the writable layer in this host directory (kept across containers)
  # instead of a tmpfs that goes with the container.
  def overlay_dir(path)
    _str("overlay_dir", Kago.__str(path, "overlay_dir"))
  end

  def entrypoint(*args)
    args = args[0] if args.size == 1 && args[0].is_a?(Array)
    _entrypoint(args.map { |a| Kago.__val(a, "entrypoint") })
  end

  def readonly(v = true)
    _bool("readonly", Kago.__bool(v, "readonly"))
  end

  def overlay(v = true)
    return rootfs(_get_rootfs, overlay: v) if _get_rootfs
    _bool("overlay", true)
    _overlay_size(Kago.__val(v, "overlay")) if v.is_a?(String) || v.is_a?(Integer)
    self
  end

  def command(*args)
    args = args[0] if args.size == 1 && args[0].is_a?(Array)
    raise ArgumentError, "command: give at least the program to run" if args.empty?
    _argv(args.map { |a| Kago.__val(a, "command") })
  end

  # env "K=V", ...; env "K", "V"; env K: "v", "L" => "w"; env clear: true drops the defaults first.
  def env(*args, **kw)
    _env_clear if kw.delete(:clear)
    if args.size == 2 && !args[0].to_s.include?("=")
      args = ["#{Kago.__str(args[0], 'env')}=#{Kago.__val(args[1], 'env')}"]
    end
    args.flatten.each do |a|
      if a.is_a?(Hash)
        a.each { |k, v| _env("#{Kago.__str(k, 'env')}=#{Kago.__val(v, 'env')}") }
      else
        s = Kago.__str(a, "env")
        raise ArgumentError, "env: \"#{s}\": expected KEY=VALUE" unless s.include?("=")
        _env(s)
      end
    end
    kw.each { |k, v| _env("#{k}=#{Kago.__val(v, 'env')}") }
    self
  end

  def cwd(path)
    _str("cwd", Kago.__str(path, "cwd"))
  end

  def hostname(h)
    _str("hostname", Kago.__str(h, "hostname"))
  end

  # user "1000:1000", user 1000, user 1000, 100
  def user(u, g = nil)
    if u.is_a?(Integer)
      _uid_gid(Kago.__int(u, "user"), g.nil? ? u : Kago.__int(g, "user gid"))
    else
      s = Kago.__str(u, "user")
      s = "#{s}:#{Kago.__int(g, 'user gid')}" unless g.nil?
      _user(s)
    end
  end

  # namespaces :pid, :mount, ... replaces the default set; namespaces :none creates none.
  def namespaces(*list)
    names = Kago.__list(list, "namespaces")
    names = [] if names == ["none"]
    _ns(names)
  end

  # userns :auto (the default: root maps to a range of 65536 ids of kago's pool, docs/userns.md) or :host
  def userns(mode)
    _str("userns", Kago.__str(mode, "userns"))
  end

  # Enters an existing namespace instead of creating one: join_namespace :net, "/proc/123/ns/net".
  def join_namespace(ns, path)
    _join(Kago.__str(ns, "join_namespace"), Kago.__str(path, "join_namespace"))
  end

  def uid_map(*args, inside: nil, outside: nil, count: nil)
    _map("uid_map", args, inside, outside, count)
  end

  def gid_map(*args, inside: nil, outside: nil, count: nil)
    _map("gid_map", args, inside, outside, count)
  end

  def _map(kind, args, inside, outside, count)
    if args.size == 1
      _idmap(kind, Kago.__str(args[0], kind).tr(" ", ":"))
    elsif args.size == 3
      _idmap(kind, args.map { |x| Kago.__int(x, kind) }.join(":"))
    elsif args.empty? && inside && outside && count
      _idmap(kind, [inside, outside, count].map { |x| Kago.__int(x, kind) }.join(":"))
    else
      raise ArgumentError, "#{kind}: expected \"INSIDE:OUTSIDE:COUNT\", three Integers, or inside:, outside:, count:"
    end
  end

  # mount "/host/dir", "/in/container", readonly: true  (a bind mount)
  def mount(src, dst = nil, readonly: false)
    src = Kago.__str(src, "mount")
    dst = dst.nil? ? src : Kago.__str(dst, "mount")
    _bind(src, dst, Kago.__bool(readonly, "mount readonly:"))
  end

  def bind(src, dst = nil, readonly: false)
    mount(src, dst, readonly: readonly)
  end

  def tmpfs(dst, size: nil, readonly: false)
    _tmpfs(Kago.__str(dst, "tmpfs"), size.nil? ? nil : Kago.__val(size, "tmpfs size:"),
           Kago.__bool(readonly, "tmpfs readonly:"))
  end

  # masked_paths / readonly_paths replace kago's default lists; mask / readonly_path add to them.
  def masked_paths(*p)
    _paths("masked", Kago.__list(p, "masked_paths"), true)
  end

  def mask(*p)
    _paths("masked", Kago.__list(p, "mask"), false)
  end

  def readonly_paths(*p)
    _paths("readonly", Kago.__list(p, "readonly_paths"), true)
  end

  def readonly_path(*p)
    _paths("readonly", Kago.__list(p, "readonly_path"), false)
  end

  # cgroup cpu: "30%", memory: "64M", pids: 32, cpuset: "0-1", cpu_weight: 100, cpu_period: "100ms",
  # and raw controller keys: cgroup "cpu.cfs_quota_us" => "30000"
  def cgroup(h = nil, **kw, &blk)
    raise ArgumentError, "cgroup: takes its limits as arguments (cgroup cpu: \"30%\", memory: \"256M\"), not a block" if blk
    all = {}
    all.merge!(h) if h.is_a?(Hash)
    raise TypeError, "cgroup: expected a Hash like cpu: \"30%\", got #{h.inspect}" if h && !h.is_a?(Hash)
    all.merge!(kw)
    all.each { |k, v| _limit(Kago.__str(k, "cgroup"), Kago.__val(v, "cgroup #{k}")) }
    self
  end

  # rlimit :nofile, 1024[, 4096]; rlimits nofile: [1024, 4096], nproc: 64
  def rlimit(res, soft, hard = nil)
    hard = soft if hard.nil?
    _rlimit(Kago.__str(res, "rlimit"), Kago.__val(soft, "rlimit #{res}"), Kago.__val(hard, "rlimit #{res}"))
  end

  def rlimits(h = nil, **kw)
    all = (h || {}).merge(kw)
    all.each { |k, v| v.is_a?(Array) ? rlimit(k, v[0], v[1]) : rlimit(k, v) }
    self
  end

  # capabilities :all / :none / :default; allow: [...] (exactly these); add: [...], drop: [...]
  def capabilities(mode = nil, allow: nil, add: nil, drop: nil)
    _caps(Kago.__str(mode, "capabilities"), []) unless mode.nil?
    _caps("allow", Kago.__list([allow], "capabilities allow:")) unless allow.nil?
    _caps("add", Kago.__list([add], "capabilities add:")) unless add.nil?
    _caps("drop", Kago.__list([drop], "capabilities drop:")) unless drop.nil?
    self
  end

  # seccomp :default / :unconfined; seccomp default: :errno do |s| s.allow :read ... end
  def seccomp(mode = nil, default: nil, errno: 1, &blk)
    raise ArgumentError, "seccomp: give a mode (:default, :unconfined) or default: ACTION, not both" if mode && default
    if default
      _seccomp("custom", Kago.__str(default, "seccomp default:"), Kago.__int(errno, "seccomp errno:", 0))
    elsif mode
      _seccomp(Kago.__str(mode, "seccomp"), "allow", 1)
    end
    blk.call(Kago::Seccomp._new(self)) if blk
    self
  end

  def no_new_privs(v = true)
    _bool("no_new_privs", Kago.__bool(v, "no_new_privs"))
  end

  def init(v = true)
    _bool("init", Kago.__bool(v, "init"))
  end

  # sysfs false: /sys is an empty read-only tmpfs instead of a sysfs (starts stay fast with many containers)
  def sysfs(v = true)
    _bool("sysfs", Kago.__bool(v, "sysfs"))
  end

  def listen_port(port)
    _listen_port(Kago.__int(port, "listen_port", 1))
  end

  # How long stop (and the supervisor's shutdown) waits after SIGTERM before SIGKILL.
  def stop_grace(d)
    _stop_grace(Kago.__ms(d, "stop_grace"))
  end

  %w[before_start after_start on_exit on_oom on_failure].each do |kind|
    define_method(kind) do |&blk|
      _hook(kind, blk)
    end
  end

  def after(d, &blk)
    _timer("after", Kago.__ms(d, "after"), d, blk)
  end

  def every(d, &blk)
    ms = Kago.__ms(d, "every")
    raise ArgumentError, "every: #{d.inspect} is too short (at least 10ms)" if ms < 10
    _timer("every", ms, d, blk)
  end

  def on_signal(*sigs, &blk)
    raise ArgumentError, "on_signal: name at least one signal, e.g. on_signal(:USR1)" if sigs.empty?
    sigs.each { |s| _signal(s.is_a?(Integer) ? s.to_s : Kago.__str(s, "on_signal"), blk) }
    self
  end

  def ready(port:, timeout: "30s", &blk)
    _ready(Kago.__int(port, "ready port:", 1), Kago.__ms(timeout, "ready timeout:"), blk)
  end
end

class Kago::Seccomp
  %w[allow errno kill log].each do |action|
    define_method(action) do |*calls, errno: 1|
      Kago.__list(calls, "seccomp #{action}").each do |sc|
        @spec._scmp_rule(sc, action, Kago.__int(errno, "seccomp errno:", 0))
      end
      self
    end
  end

  def self._new(spec)
    s = new
    s.instance_variable_set(:@spec, spec)
    s
  end
end

class Kago::AppSpec
  def name
    _name
  end

  def hosts(*h)
    _hosts(Kago.__list(h, "hosts"))
  end

  def host(*h)
    hosts(*h)
  end

  # default true: the app serves every Host no app's hosts match (at most one app; hosts may be empty).
  def default(v = true)
    _bool_field("default", Kago.__bool(v, "default"))
  end

  # The container of one instance: the same methods as Kago.container's (hooks excepted).
  def container(&blk)
    c = _spec
    blk.call(c) if blk
    c
  end

  def port(n)
    _port(Kago.__int(n, "port", 1))
  end

  %w[lifetime idle_timeout start_timeout stop_grace max_backoff].each do |f|
    define_method(f) { |d| _ms_field(f, Kago.__ms(d, f)) }
  end

  %w[min_instances max_instances concurrency max_pending].each do |f|
    define_method(f) { |n| _uint_field(f, Kago.__int(n, f)) }
  end

  def max_body(size)
    _max_body(Kago.__val(size, "max_body"))
  end

  def socket_activation(v = true)
    _bool_field("socket_activation", Kago.__bool(v, "socket_activation"))
  end

  def checkpoint_after_ready(v = true)
    _bool_field("checkpoint_after_ready", Kago.__bool(v, "checkpoint_after_ready"))
  end

  def checkpoint_at_listen(v = true)
    _bool_field("checkpoint_at_listen", Kago.__bool(v, "checkpoint_at_listen"))
  end

  # checkpoint :after_ready | :at_listen — the CRIU tier: kago serve images the app's first instance
  # once it is ready (:after_ready) or the moment its socket listens, before any connection reaches it
  # (:at_listen), and restores later starts from that image instead of booting the app.
  def checkpoint(moment)
    m = Kago.__str(moment, "checkpoint")
    unless %w[after_ready at_listen].include?(m)
      raise ArgumentError, "checkpoint: unknown moment :#{m} (:after_ready or :at_listen)"
    end
    _bool_field("checkpoint_after_ready", m == "after_ready")
    _bool_field("checkpoint_at_listen", m == "at_listen")
  end

  # data "/srv/sites/blog", to: "/data" — a bind mount of the site's data into every instance.
  def data(src, to: nil, readonly: false)
    raise ArgumentError, "data: give the path inside the container with to: \"/data\"" if to.nil?
    _spec.mount(src, to, readonly: readonly)
    self
  end

  # log size: "10M", keep: 3 — the instances' stdout and stderr, captured by kago serve into
  # <root>/logs/<app>/current.log, rotated at size; keep counts the files kept, current.log included.
  def log(**kw)
    size = kw.delete(:size)
    keep = kw.delete(:keep)
    raise ArgumentError, "log: unknown keyword: #{kw.keys.first} (size:, keep:)" unless kw.empty?
    _log(size.nil? ? nil : Kago.__val(size, "log size"), keep.nil? ? -1 : Kago.__int(keep, "log keep", 1))
  end

  # tls cert: "site.pem", key: "site.key" — the site's certificate (its chain after it in the same file)
  # and key, PEM; kago serve picks it by SNI on its --listen-tls listeners. Relative to the Kagofile.
  def tls(cert: nil, key: nil)
    raise ArgumentError, "tls: give cert: and key:" if cert.nil? || key.nil?
    _tls(Kago.__str(cert, "tls cert"), Kago.__str(key, "tls key"))
  end

  # https_redirect true — plain HTTP requests for the app get 308 to https://host/path.
  def https_redirect(v = true)
    _bool_field("https_redirect", Kago.__bool(v, "https_redirect"))
  end

  # hsts "max-age=63072000" — Strict-Transport-Security on the app's responses over TLS.
  def hsts(v)
    _hsts(Kago.__str(v, "hsts"))
  end

  # scale_up cpu: "50%".."200%", memory: "128M".."512M" — an instance starts at the bottom of each range;
  # kago serve raises its limits live a step at a time while it stays throttled (or near its memory limit)
  # over window:, and lowers them a step after idle: of no pressure. Knobs: cpu_step:, memory_step: (a
  # quarter of the range), window: "10s", idle: "60s", throttled: 20 (% of CFS periods throttled),
  # memory_high: 90 (% of the limit), scale_out_at_top: true (scale out only at the top of the range).
  def scale_up(**kw)
    known = %i[cpu memory cpu_step memory_step window idle throttled memory_high scale_out_at_top]
    bad = kw.keys.find { |k| !known.include?(k) }
    raise ArgumentError, "scale_up: unknown keyword: #{bad} (#{known.join(', ')})" if bad
    if kw[:cpu].nil? && kw[:memory].nil?
      raise ArgumentError, "scale_up: give cpu: \"50%\"..\"200%\" or memory: \"128M\"..\"512M\" (or both)"
    end
    %i[cpu memory].each do |k|
      r = kw[k]
      next if r.nil?
      unless r.is_a?(Range) && !r.begin.nil? && !r.end.nil?
        ex = k == :cpu ? '"50%".."200%"' : '"128M".."512M"'
        raise TypeError, "scale_up #{k}: expected a range like #{ex}, got #{r.class} (#{r.inspect})"
      end
      raise ArgumentError, "scale_up #{k}: write the range with .. (its top is included), not ..." if r.exclude_end?
      step = kw[:"#{k}_step"]
      _scale_up_range(k.to_s, Kago.__val(r.begin, "scale_up #{k}"), Kago.__val(r.end, "scale_up #{k}"),
                      step.nil? ? nil : Kago.__val(step, "scale_up #{k}_step"))
    end
    %i[cpu_step memory_step].each do |k|
      raise ArgumentError, "scale_up #{k}: give #{k.to_s.sub('_step', '')}: a range too" if kw[k] && kw[k.to_s.sub('_step', '').to_sym].nil?
    end
    _scale_up_knob("window", Kago.__ms(kw[:window], "scale_up window")) unless kw[:window].nil?
    _scale_up_knob("idle", Kago.__ms(kw[:idle], "scale_up idle")) unless kw[:idle].nil?
    _scale_up_knob("throttled", Kago.__int(kw[:throttled], "scale_up throttled")) unless kw[:throttled].nil?
    _scale_up_knob("memory_high", Kago.__int(kw[:memory_high], "scale_up memory_high")) unless kw[:memory_high].nil?
    unless kw[:scale_out_at_top].nil?
      _scale_up_knob("scale_out_at_top", Kago.__bool(kw[:scale_out_at_top], "scale_up scale_out_at_top") ? 1 : 0)
    end
    self
  end

  # idle :stop  or  idle :freeze, for: "10m"
  def idle(action, **kw)
    f = kw.delete(:for)
    raise ArgumentError, "idle: unknown keyword: #{kw.keys.first}" unless kw.empty?
    _idle(Kago.__str(action, "idle"), f.nil? ? 0 : Kago.__ms(f, "idle for:"))
  end
end

# What a hook receives: name, pid, running?, status, stats, limits, pause, resume (C), and these.
class Kago::Container
  # update cpu: "20%", memory: "128M", pids: 64, cpuset: "0", cpu_weight: 50, "cpu.cfs_quota_us" => 20000
  def update(h = nil, **kw)
    all = {}
    all.merge!(h) if h.is_a?(Hash)
    raise TypeError, "update: expected a Hash like cpu: \"20%\", got #{h.inspect}" if h && !h.is_a?(Hash)
    all.merge!(kw)
    raise ArgumentError, "update: give at least one limit, e.g. update(cpu: \"20%\")" if all.empty?
    s = {}
    all.each { |k, v| s[Kago.__str(k, "update")] = Kago.__val(v, "update #{k}") }
    _update(s)
  end

  # kill :TERM (the init), kill :KILL, all: true (every process of the container)
  def kill(sig = :TERM, all: false)
    _kill(sig.is_a?(Integer) ? sig.to_s : Kago.__str(sig, "kill"), Kago.__bool(all, "kill all:"))
  end

  # SIGTERM, then SIGKILL after grace (default: the container's stop_grace).
  def stop(grace: nil)
    _stop(grace.nil? ? -1 : Kago.__ms(grace, "stop grace:"))
  end

  def inspect
    "#<Kago::Container #{name}>"
  end
end
