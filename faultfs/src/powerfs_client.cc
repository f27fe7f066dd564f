// PowerFsCommand: one write and one read of a dbdb-powerfs control file.
#include "faultfs/powerfs_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace faultfs {

dbdb::Result<std::string> PowerFsCommand(const std::string& mount, const std::string& command) {
  const std::string path = mount + "/" + kPowerFsControlName;
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return dbdb::Status::IOError("open " + path + ": " + std::strerror(errno) + " (is a dbdb-powerfs mounted there?)");
  }
  ssize_t n;
  do {
    n = ::pwrite(fd, command.data(), command.size(), 0);
  } while (n < 0 && errno == EINTR);
  int write_errno = errno;
  std::string reply;
  char buffer[65536];
  for (uint64_t at = 0;;) {
    ssize_t r = ::pread(fd, buffer, sizeof(buffer), static_cast<off_t>(at));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    reply.append(buffer, static_cast<size_t>(r));
    at += static_cast<uint64_t>(r);
  }
  ::close(fd);
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  if (n != static_cast<ssize_t>(command.size())) {
    return dbdb::Status::IOError("dbdb-powerfs " + command + ": " +
                                 (reply.empty() ? std::string(std::strerror(n < 0 ? write_errno : EIO)) : reply));
  }
  return reply;
}

}  // namespace faultfs
