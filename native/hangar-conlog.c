/*
 * hangar-conlog: writes one VM's serial console output to a size-bounded,
 * rotated log. QEMU writes its console log into a pipe; this process reads
 * the other end and keeps FILE at most MAX_BYTES long, moving full files to
 * FILE.1 .. FILE.(N-1) (the oldest is dropped), so a guest printing without
 * end cannot fill the host's disk.
 *
 *   hangar-conlog FILE MAX_BYTES FILES   (stdin: the pipe)
 *
 * It is its own process, in its own session, so the log keeps being written
 * while the daemon is stopped or restarting. It ends when the pipe reports
 * end-of-file, which happens when QEMU, the only writer, has exited. It must
 * never make QEMU wait: it reads as soon as data arrives, asks for a 1 MiB
 * pipe, and a write error (disk full) drops that output rather than stopping
 * to read. If it dies, QEMU's writes fail with EPIPE and the guest runs on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *file;
static long long max_bytes;
static int files;
static int fd = -1;
static long long size;

static void open_log(void) {
  fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  struct stat st;
  size = (fd >= 0 && fstat(fd, &st) == 0) ? st.st_size : 0;
}

/* FILE -> FILE.1 -> ... -> FILE.(files-1); the oldest is overwritten. */
static void rotate(void) {
  char from[PATH_MAX], to[PATH_MAX];
  if (fd >= 0) close(fd);
  for (int k = files - 1; k >= 1; k--) {
    if (k == 1) snprintf(from, sizeof from, "%s", file);
    else snprintf(from, sizeof from, "%s.%d", file, k - 1);
    snprintf(to, sizeof to, "%s.%d", file, k);
    if (rename(from, to) != 0 && errno != ENOENT) { /* keep going: a stuck file is overwritten later */ }
  }
  open_log();
}

static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = fd >= 0 ? write(fd, p, n) : -1;
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* disk full or gone: drop this piece, keep reading */
    p += w;
    n -= (size_t)w;
  }
}

static void log_bytes(const char *p, size_t n) {
  while (n > 0) {
    if (size >= max_bytes) rotate();
    size_t room = (size_t)(max_bytes - size);
    size_t take = n < room ? n : room;
    write_all(p, take);
    size += (long long)take;
    p += take;
    n -= take;
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: hangar-conlog FILE MAX_BYTES FILES (stdin: console output)\n");
    return 2;
  }
  file = argv[1];
  char *end;
  max_bytes = strtoll(argv[2], &end, 10);
  if (*end || max_bytes < 4096) { fprintf(stderr, "hangar-conlog: MAX_BYTES must be a number >= 4096\n"); return 2; }
  files = (int)strtol(argv[3], &end, 10);
  if (*end || files < 2 || files > 10) { fprintf(stderr, "hangar-conlog: FILES must be 2..10\n"); return 2; }
  if (strlen(file) + 4 >= PATH_MAX) { fprintf(stderr, "hangar-conlog: FILE path too long\n"); return 2; }

  /* The daemon's signals (terminal, process group) are not ours; SIGTERM still ends us. */
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  /* Room for bursts, so QEMU's writes do not wait on us; blocking reads from here on. */
  (void)fcntl(0, F_SETPIPE_SZ, 1 << 20);
  int fl = fcntl(0, F_GETFL);
  if (fl >= 0) (void)fcntl(0, F_SETFL, fl & ~O_NONBLOCK);

  open_log();
  static char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(0, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    log_bytes(buf, (size_t)n);
  }
  if (fd >= 0) close(fd);
  return 0;
}
