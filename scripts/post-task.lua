-- wrk script: every request submits one task. wrk reports any non-2xx
-- replies on a "Non-2xx or 3xx responses" line.
-- Usage: TASK_TYPE=noop wrk -t2 -c64 -d10s -s scripts/post-task.lua http://127.0.0.1:8080/task
local task_type = os.getenv("TASK_TYPE") or "example_task"
wrk.method = "POST"
wrk.body = '{"type":"' .. task_type .. '","payload":{"key":"value"},"max_retries":3,"priority":2}'
wrk.headers["Content-Type"] = "application/json"
