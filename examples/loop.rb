# 100 similar containers are one loop. `kago run examples/loop.rb --set count=50 --set memory=32M`
count  = Kago.set("count", "10").to_i
memory = Kago.set("memory", "64M")

def worker(i, memory)
  Kago.container "worker-#{i}" do |c|
    c.command "/bin/sh", "-c", "echo worker #{i}; exec sleep 3600"
    c.init
    c.env WORKER: i, SHARD: i % 4
    c.cgroup cpu: "#{5 + i % 10}%", memory: memory, pids: 8
    c.stop_grace "2s"
  end
end

count.times { |i| worker(i, memory) }
