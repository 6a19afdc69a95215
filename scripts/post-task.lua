-- wrk script: every request submits the seed task.
-- Usage: wrk -t2 -c64 -d10s -s scripts/post-task.lua http://127.0.0.1:8080/task
wrk.method = "POST"
wrk.body = '{"type":"example_task","payload":{"key":"value"},"max_retries":3,"priority":2}'
wrk.headers["Content-Type"] = "application/json"

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  for status, n in pairs(statuses) do
    io.write(string.format("status %d: %d\n", status, n))
  end
end
