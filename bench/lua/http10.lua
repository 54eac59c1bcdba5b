-- HTTP/1.0 without keep-alive: the server closes after each answer and wrk
-- reconnects, so this measures connection setup and teardown.
local req = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
request = function()
  return req
end
