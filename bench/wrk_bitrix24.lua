-- wrk script for bench/intake.py: every request a distinct Bitrix24 outbound event.
--
-- Each delivery is what a portal posts (form-encoded ONCRMDEALUPDATE with the portal's
-- auth[...] fields and the application token) for a deal id no other request of the run
-- uses, so the intake stores every one (no duplicates). Keep-alive is wrk's default; the
-- responses that close the connection are counted, so the bench can tell whether it was used.
--
--   wrk -t2 -c32 -d15s -s bench/wrk_bitrix24.lua http://127.0.0.1:PORT -- PATH TOKEN BASE MARKER
--
-- PATH: the hook's path; TOKEN: the application token; BASE: the first deal id of this run
-- (threads take disjoint ranges above it); MARKER: a byte string whose presence in a 200
-- answer means "stored" ("-" for any 200). done() prints one JSON line.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   path = args[1] or "/hooks/bitrix24/b24"
   token = args[2] or ""
   base = tonumber(args[3] or "1000000000")
   marker = args[4] or "-"
   counter = 0
   accepted, duplicates, other, closes = 0, 0, 0, 0
   statuses = {}
   deal_base = base + tid * 100000000
   headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["User-Agent"] = "Bitrix24 Webhook Engine",
   }
   tail = "&auth%5Bdomain%5D=bench.bitrix24.ru"
      .. "&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbench.bitrix24.ru%2Frest%2F"
      .. "&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F"
      .. "&auth%5Bmember_id%5D=5f2b6d2ad1e0c0f3b1f1d8b7a3e2c1d0"
      .. "&auth%5Bapplication_token%5D=" .. token
end

function request()
   counter = counter + 1
   local body = string.format(
      "event=ONCRMDEALUPDATE&event_handler_id=7&data%%5BFIELDS%%5D%%5BID%%5D=%d&ts=%d",
      deal_base + counter, os.time()
   ) .. tail
   return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
   if status == 200 then
      if marker == "-" or (body and string.find(body, marker, 1, true)) then
         accepted = accepted + 1
      else
         duplicates = duplicates + 1
      end
   else
      other = other + 1
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
   local conn = hdrs["Connection"] or hdrs["connection"]
   if conn and string.lower(conn) == "close" then
      closes = closes + 1
   end
end

function done(summary, latency, requests)
   local acc, dup, oth, cls, sent = 0, 0, 0, 0, 0
   local by_status = {}
   for _, t in ipairs(threads) do
      acc = acc + t:get("accepted")
      dup = dup + t:get("duplicates")
      oth = oth + t:get("other")
      cls = cls + t:get("closes")
      sent = sent + t:get("counter")
      for k, v in pairs(t:get("statuses")) do
         by_status[k] = (by_status[k] or 0) + v
      end
   end
   local parts = {}
   for k, v in pairs(by_status) do
      table.insert(parts, string.format('"http_%s": %d', k, v))
   end
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "sent": %d, "duration_us": %d, "accepted": %d, "duplicates": %d, "non_200": %d, '
         .. '"closes": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "connect_errors": %d, "read_errors": %d, '
         .. '"write_errors": %d, "timeouts": %d, "statuses": {%s}}\n',
      summary.requests, sent, summary.duration, acc, dup, oth, cls,
      latency:percentile(50), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")
   ))
end
