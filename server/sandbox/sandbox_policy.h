#ifndef MODELSERVER_SERVER_SANDBOX_SANDBOX_POLICY_H_
#define MODELSERVER_SERVER_SANDBOX_SANDBOX_POLICY_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace modelserver {

// The confinement a model worker process puts itself in before it parses one
// byte of a code-bearing model file (TorchScript, compiled packages): what the
// file's code may then do is decided by the kernel, not by checks of ours.
//
// In order, irreversibly for the calling process and its future threads:
//  - resource limits: RLIMIT_CORE 0, RLIMIT_NOFILE, and RLIMIT_AS / RLIMIT_DATA
//    when given (the model's memory share);
//  - PR_SET_NO_NEW_PRIVS (no setuid gains through exec; required by the rest);
//  - Landlock (where the kernel has it): a ruleset that handles every filesystem
//    access right this kernel knows and grants none, so no path can be opened,
//    created, removed or executed; from ABI 4 no TCP bind/connect, from ABI 6
//    no abstract unix sockets or signals outside the worker. Without Landlock
//    the report says so and seccomp alone stands;
//  - a seccomp filter (libseccomp) that refuses with EPERM, not a kill, so that
//    LibTorch fails cleanly: opening or creating files (open, openat, openat2,
//    creat), changing the filesystem (mkdir, unlink, rename, link, symlink,
//    chmod, chown, truncate, mknod, mount), running programs (execve,
//    execveat), new processes (fork, vfork, clone without CLONE_THREAD; clone3
//    answers ENOSYS so glibc uses clone), new sockets and connections (socket,
//    socketpair, connect, bind, listen, accept), signals to other processes
//    (kill, tkill, tgkill, rt_sigqueueinfo to any pid but its own), tracing and
//    other processes' memory (ptrace, process_vm_readv/writev,
//    perf_event_open), namespaces, keys, bpf, userfaultfd.
// Descriptors the worker inherited (its socket, its memory) keep working:
// read, write, sendmsg, recvmsg, mmap of an inherited memfd.
//
//   ASSIGN_OR_RETURN(SandboxPolicy::Report r, SandboxPolicy::Apply({.max_open_files = 16}));
//   LOG_INFO("sandbox: ", r.Summary());
//
// Call from a single-threaded process (the worker's main, before LibTorch
// starts threads) so that every thread inherits the filter.
class SandboxPolicy {
 public:
  struct Options {
    // RLIMIT_AS and RLIMIT_DATA; 0 leaves them as they are.
    uint64_t address_space_bytes = 0;
    uint64_t data_bytes = 0;
    // RLIMIT_NOFILE (the inherited descriptors must be below it).
    int max_open_files = 32;
    // For a compiled package (AOTInductor), which the dynamic loader must open as
    // /proc/self/fd/N: open/openat stay allowed read-only (no write, create,
    // truncate or append flag) until ForbidOpen. Only with Landlock, whose
    // ruleset then leaves no path of the filesystem openable (a memfd, on no
    // mounted filesystem, is not one): Apply fails without it.
    bool allow_read_only_open = false;
  };
  struct Report {
    int landlock_abi = 0;  // 0: the kernel has no Landlock (seccomp alone)
    bool seccomp = false;
    // Threads of the process when it was confined: Landlock binds the calling
    // thread (and threads it starts later) only, so this should be 1. (The
    // seccomp filter is synced to every thread.)
    int threads = 0;
    bool network_namespace = false;  // set by the caller (EnterEmptyNetworkNamespace)
    bool read_only_open = false;     // Options::allow_read_only_open
    std::string Summary() const;
  };

  // INTERNAL naming the step that failed (then the process must not go on to
  // parse anything: the caller exits).
  static absl::StatusOr<Report> Apply(const Options& options);

  // After Apply(allow_read_only_open): a second seccomp filter, stacked on the
  // first for every thread, that refuses open and openat altogether (EPERM), as
  // Apply alone does. Irreversible.
  static absl::Status ForbidOpen();

  // The Landlock ABI version of this kernel (0 when absent or disabled).
  static int LandlockAbi();

  // Moves the process into a new user namespace and an empty network namespace
  // (only a down loopback: no route anywhere). Call first, single-threaded.
  // False where unprivileged user namespaces are not permitted (most Kubernetes
  // pods): the seccomp filter's refusal of new sockets stands alone then.
  static bool EnterEmptyNetworkNamespace();
  // Threads of this process (/proc/self/task entries; 0 when unreadable).
  static int CountThreads();
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SANDBOX_SANDBOX_POLICY_H_
