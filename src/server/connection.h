// The sockets behind the HTTP server, found without help from cpp-httplib
// (0.11 neither reports a client's disconnect nor hands out its sockets):
// a non-streaming request watches its own for the client's close, the
// connection watchdog shuts down connections that hold a thread without
// sending a request, and the listen backlog is raised on the listening one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lclm::server {

struct Connection {
  int fd = -1;
  std::string peer_host;  // numeric, as getnameinfo prints it (and httplib reports it)
  int peer_port = -1;
};

// This process's connected TCP sockets whose local port is `local_port`.
std::vector<Connection> connections_on(int local_port);

// The one connected from remote_addr:remote_port to local_port, or none.
std::optional<int> find_connection_fd(const std::string& remote_addr, int remote_port,
                                      int local_port);

// This process's listening socket on `port`, or none.
std::optional<int> listening_fd(int port);

// The bytes this process has read from TCP socket `fd` so far: what the
// kernel received (TCP_INFO) less what still waits in its queue; none when
// the kernel does not say.
std::optional<std::uint64_t> bytes_read(int fd);

// Whether the peer of `fd` has closed its side (or the socket failed); data
// waiting to be read (a pipelined request) is not a close.
bool peer_closed(int fd);

}  // namespace lclm::server
