-- wrk script: every request submits BATCH tasks (default 100) in one
-- POST /tasks. Divide wrk's requests/s by BATCH for tasks/s... or rather
-- multiply: tasks/s = requests/s × BATCH. Non-2xx replies are reported.
-- Usage: TASK_TYPE=noop BATCH=1000 wrk -t2 -c16 -d10s -s scripts/post-batch.lua http://127.0.0.1:8080/tasks
local task_type = os.getenv("TASK_TYPE") or "noop"
local n = tonumber(os.getenv("BATCH") or "100")
local elems = {}
for i = 1, n do
  elems[i] = '{"type":"' .. task_type .. '","payload":{"key":"value","i":' .. i .. '},"max_retries":3,"priority":' .. (i % 10) .. '}'
end
wrk.method = "POST"
wrk.body = '{"tasks":[' .. table.concat(elems, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"
