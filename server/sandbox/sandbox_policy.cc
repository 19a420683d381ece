#include "server/sandbox/sandbox_policy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>
#include <memory>

#include "absl/strings/str_cat.h"

namespace modelserver {
namespace {

// Landlock's access rights by ABI version (linux/landlock.h of newer kernels;
// Debian 12's headers stop at ABI 2).
constexpr uint64_t kFsAbi1 = (uint64_t{1} << 13) - 1;      // EXECUTE .. MAKE_SYM
constexpr uint64_t kFsRefer = uint64_t{1} << 13;           // ABI 2
constexpr uint64_t kFsTruncate = uint64_t{1} << 14;        // ABI 3
constexpr uint64_t kFsIoctlDev = uint64_t{1} << 15;        // ABI 5
constexpr uint64_t kNetBindTcp = uint64_t{1} << 0;         // ABI 4
constexpr uint64_t kNetConnectTcp = uint64_t{1} << 1;      // ABI 4
constexpr uint64_t kScopeAbstractUnix = uint64_t{1} << 0;  // ABI 6
constexpr uint64_t kScopeSignal = uint64_t{1} << 1;        // ABI 6

// The kernel's struct landlock_ruleset_attr as of ABI 6; older kernels accept
// it as long as the fields they do not know are zero.
struct RulesetAttr {
  uint64_t handled_access_fs = 0;
  uint64_t handled_access_net = 0;
  uint64_t scoped = 0;
};

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat("sandbox: ", what, ": ", std::strerror(errno)));
}

absl::Status SetLimit(int resource, rlim_t value, const char* name) {
  struct rlimit limit {
    value, value
  };
  if (setrlimit(resource, &limit) != 0) return Errno(absl::StrCat("setrlimit(", name, ")"));
  return absl::OkStatus();
}

// No filesystem access at all, and what else this kernel's Landlock can refuse.
absl::Status RestrictLandlock(int abi) {
  RulesetAttr attr;
  attr.handled_access_fs = kFsAbi1;
  if (abi >= 2) attr.handled_access_fs |= kFsRefer;
  if (abi >= 3) attr.handled_access_fs |= kFsTruncate;
  if (abi >= 5) attr.handled_access_fs |= kFsIoctlDev;
  if (abi >= 4) attr.handled_access_net = kNetBindTcp | kNetConnectTcp;
  if (abi >= 6) attr.scoped = kScopeAbstractUnix | kScopeSignal;
  const int fd = static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0));
  if (fd < 0) return Errno("landlock_create_ruleset");
  const long restricted = syscall(SYS_landlock_restrict_self, fd, 0);  // no rules: nothing granted
  const int saved = errno;
  close(fd);
  errno = saved;
  if (restricted != 0) return Errno("landlock_restrict_self");
  return absl::OkStatus();
}

struct SeccompDeleter {
  void operator()(scmp_filter_ctx* ctx) const { seccomp_release(*ctx); }
};

// open / openat with any flag that writes: refused even while read-only opens
// are allowed (seccomp compares each flag on its own: one rule per flag).
absl::Status RefuseWritingOpens(scmp_filter_ctx ctx) {
  int rc = 0;
  for (const uint64_t flag : {uint64_t{O_WRONLY}, uint64_t{O_RDWR}, uint64_t{O_CREAT},
                              uint64_t{O_TRUNC}, uint64_t{O_APPEND}, uint64_t{O_TMPFILE}}) {
    if (rc == 0) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(open), 1,
                            SCMP_A1(SCMP_CMP_MASKED_EQ, flag, flag));
    }
    if (rc == 0) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(openat), 1,
                            SCMP_A2(SCMP_CMP_MASKED_EQ, flag, flag));
    }
  }
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("sandbox: seccomp_rule_add failed: ", std::strerror(-rc)));
  }
  return absl::OkStatus();
}

absl::Status LoadSeccomp(bool allow_read_only_open) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return absl::InternalError("sandbox: seccomp_init failed");
  std::unique_ptr<scmp_filter_ctx, SeccompDeleter> owner(&ctx);
  // Every thread of the process, also any started before (seccomp's TSYNC).
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  auto refuse = [&](int nr, uint32_t action = SCMP_ACT_ERRNO(EPERM)) {
    if (rc == 0 && nr != __NR_SCMP_ERROR) rc = seccomp_rule_add(ctx, action, nr, 0);
  };
  for (int nr :
       {// files: opening, creating, changing the tree
        SCMP_SYS(openat2), SCMP_SYS(creat), SCMP_SYS(open_by_handle_at),
        SCMP_SYS(name_to_handle_at), SCMP_SYS(mkdir), SCMP_SYS(mkdirat), SCMP_SYS(rmdir),
        SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(rename), SCMP_SYS(renameat),
        SCMP_SYS(renameat2), SCMP_SYS(link), SCMP_SYS(linkat), SCMP_SYS(symlink),
        SCMP_SYS(symlinkat), SCMP_SYS(chmod), SCMP_SYS(fchmodat), SCMP_SYS(chown), SCMP_SYS(lchown),
        SCMP_SYS(fchownat), SCMP_SYS(truncate), SCMP_SYS(mknod), SCMP_SYS(mknodat), SCMP_SYS(mount),
        SCMP_SYS(umount2), SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(swapon),
        SCMP_SYS(swapoff), SCMP_SYS(acct), SCMP_SYS(fanotify_init), SCMP_SYS(inotify_init),
        SCMP_SYS(inotify_init1),
        // programs and processes
        SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(fork), SCMP_SYS(vfork), SCMP_SYS(ptrace),
        SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(pidfd_open),
        SCMP_SYS(pidfd_getfd), SCMP_SYS(pidfd_send_signal), SCMP_SYS(tkill), SCMP_SYS(kcmp),
        SCMP_SYS(perf_event_open), SCMP_SYS(setns), SCMP_SYS(unshare), SCMP_SYS(setsid),
        SCMP_SYS(setpgid),
        // network
        SCMP_SYS(socket), SCMP_SYS(socketpair), SCMP_SYS(connect), SCMP_SYS(bind), SCMP_SYS(listen),
        SCMP_SYS(accept), SCMP_SYS(accept4),
        // the kernel's other doors
        SCMP_SYS(bpf), SCMP_SYS(userfaultfd), SCMP_SYS(add_key), SCMP_SYS(request_key),
        SCMP_SYS(keyctl), SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module),
        SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load), SCMP_SYS(reboot), SCMP_SYS(iopl),
        SCMP_SYS(ioperm), SCMP_SYS(quotactl), SCMP_SYS(io_uring_setup), SCMP_SYS(fsopen),
        SCMP_SYS(fsmount), SCMP_SYS(move_mount), SCMP_SYS(open_tree)}) {
    refuse(nr);
  }
  if (!allow_read_only_open) {
    refuse(SCMP_SYS(open));
    refuse(SCMP_SYS(openat));
  } else if (rc == 0) {
    if (absl::Status s = RefuseWritingOpens(ctx); !s.ok()) return s;
  }
  // Threads only: clone without CLONE_THREAD is a new process. clone3 passes its
  // flags in memory the filter cannot read: ENOSYS makes glibc use clone.
  if (rc == 0) {
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  }
  refuse(SCMP_SYS(clone3), SCMP_ACT_ERRNO(ENOSYS));
  // Signals only to itself.
  const auto self = static_cast<scmp_datum_t>(getpid());
  for (int nr :
       {SCMP_SYS(kill), SCMP_SYS(tgkill), SCMP_SYS(rt_sigqueueinfo), SCMP_SYS(rt_tgsigqueueinfo)}) {
    if (rc == 0) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, SCMP_A0(SCMP_CMP_NE, self));
    }
  }
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("sandbox: seccomp_rule_add failed: ", std::strerror(-rc)));
  }
  if (const int loaded = seccomp_load(ctx); loaded != 0) {
    return absl::InternalError(absl::StrCat("sandbox: seccomp_load: ", std::strerror(-loaded)));
  }
  return absl::OkStatus();
}

}  // namespace

int SandboxPolicy::LandlockAbi() {
  const long abi =
      syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi > 0 ? static_cast<int>(abi) : 0;
}

std::string SandboxPolicy::Report::Summary() const {
  return absl::StrCat(
      landlock_abi > 0 ? absl::StrCat("Landlock ABI ", landlock_abi, " (no filesystem access)")
                       : std::string("no Landlock in this kernel (seccomp alone)"),
      ", ", seccomp ? "seccomp filter loaded" : "no seccomp filter",
      read_only_open ? " (read-only opens until the package's library is open)" : "", ", ", threads,
      threads == 1 ? " thread" : " threads", " when confined, ",
      network_namespace ? "an empty network namespace"
                        : "no network namespace of its own (not permitted here)");
}

bool SandboxPolicy::EnterEmptyNetworkNamespace() {
  return unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0;
}

int SandboxPolicy::CountThreads() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return 0;
  int n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

absl::StatusOr<SandboxPolicy::Report> SandboxPolicy::Apply(const Options& options) {
  Report report;
  report.threads = CountThreads();  // Landlock confines only the calling thread's future
  if (absl::Status s = SetLimit(RLIMIT_CORE, 0, "RLIMIT_CORE"); !s.ok()) return s;
  if (absl::Status s =
          SetLimit(RLIMIT_NOFILE, static_cast<rlim_t>(options.max_open_files), "RLIMIT_NOFILE");
      !s.ok()) {
    return s;
  }
  if (options.address_space_bytes > 0) {
    if (absl::Status s = SetLimit(RLIMIT_AS, options.address_space_bytes, "RLIMIT_AS"); !s.ok()) {
      return s;
    }
  }
  if (options.data_bytes > 0) {
    if (absl::Status s = SetLimit(RLIMIT_DATA, options.data_bytes, "RLIMIT_DATA"); !s.ok()) {
      return s;
    }
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Errno("PR_SET_NO_NEW_PRIVS");
  report.landlock_abi = LandlockAbi();
  if (report.landlock_abi > 0) {
    if (absl::Status s = RestrictLandlock(report.landlock_abi); !s.ok()) return s;
  }
  if (options.allow_read_only_open && report.landlock_abi == 0) {
    return absl::FailedPreconditionError(
        "sandbox: a compiled package's library is opened read-only inside the sandbox, which "
        "is confined to no path only by Landlock, and this kernel has no Landlock; serve it "
        "with --trust_compiled_models (in process) or on a kernel with Landlock (5.13+)");
  }
  if (absl::Status s = LoadSeccomp(options.allow_read_only_open); !s.ok()) return s;
  report.seccomp = true;
  report.read_only_open = options.allow_read_only_open;
  return report;
}

absl::Status SandboxPolicy::ForbidOpen() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return absl::InternalError("sandbox: seccomp_init failed");
  std::unique_ptr<scmp_filter_ctx, SeccompDeleter> owner(&ctx);
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(open), 0);
  if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(openat), 0);
  if (rc == 0) rc = seccomp_load(ctx);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("sandbox: the no-open filter: ", std::strerror(-rc)));
  }
  return absl::OkStatus();
}

}  // namespace modelserver
