#include "server/connection.h"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdlib>
#include <filesystem>

namespace lclm::server {
namespace {

struct Endpoint {
  std::string host;
  int port = -1;
};

std::optional<Endpoint> endpoint(const sockaddr_storage& addr, socklen_t len) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof host, port,
                  sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return std::nullopt;
  }
  return Endpoint{host, std::atoi(port)};
}

// Calls visit(fd, local, peer) for every socket of this process bound to
// `port`; peer is empty for one that is not connected.
template <typename Visit>
void each_socket_on(int port, Visit visit) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long fd = std::strtol(name.c_str(), &end, 10);
    if (end == name.c_str() || *end != '\0') continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        (local.ss_family != AF_INET && local.ss_family != AF_INET6)) {
      continue;  // not an internet socket
    }
    const auto here = endpoint(local, local_len);
    if (!here || here->port != port) continue;
    std::optional<Endpoint> there;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0) {
      there = endpoint(peer, peer_len);
      if (!there) continue;
    }
    visit(static_cast<int>(fd), there);
  }
}

}  // namespace

std::vector<Connection> connections_on(int local_port) {
  std::vector<Connection> out;
  each_socket_on(local_port, [&](int fd, const std::optional<Endpoint>& peer) {
    if (peer) out.push_back({fd, peer->host, peer->port});
  });
  return out;
}

std::optional<int> find_connection_fd(const std::string& remote_addr, int remote_port,
                                      int local_port) {
  for (const Connection& c : connections_on(local_port)) {
    if (c.peer_port == remote_port && c.peer_host == remote_addr) return c.fd;
  }
  return std::nullopt;
}

std::optional<int> listening_fd(int port) {
  std::optional<int> found;
  each_socket_on(port, [&](int fd, const std::optional<Endpoint>& peer) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (!peer && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening) {
      found = fd;
    }
  });
  return found;
}

bool peer_closed(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char byte;
    return recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;  // 0: orderly close
  }
  return false;
}

std::optional<std::uint64_t> bytes_read(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received) {
    return std::nullopt;
  }
  int queued = 0;
  if (ioctl(fd, SIOCINQ, &queued) != 0 || queued < 0) return std::nullopt;
  const auto waiting = static_cast<std::uint64_t>(queued);
  return info.tcpi_bytes_received > waiting ? info.tcpi_bytes_received - waiting : 0;
}

}  // namespace lclm::server
