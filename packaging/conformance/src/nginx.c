/*
 * A stand-in for nginx in ucri's offline conformance images
 * (packaging/conformance/images.sh). It is not nginx: it is a small static
 * HTTP file server that behaves like nginx where cri-tools' critest looks.
 *
 *  - The master process keeps the executable's name (comm "nginx") and
 *    retitles itself "nginx: master process ARGV..." the way nginx does: it
 *    moves the environment away and writes the title over the argv and
 *    environment strings, so /proc/PID/cmdline and ps show the title.
 *  - It writes its pid to the `pid` file named in /etc/nginx/nginx.conf
 *    (default /var/run/nginx.pid) and removes it on exit.
 *  - It binds every `listen` of /etc/nginx/conf.d/default.conf (port 80 if
 *    there is none; "[::]:N" is IPv6, "ADDR:N" an IPv4 address) and forks one
 *    "nginx: worker process", which answers GET and HEAD with the files under
 *    the `root` of that file (default /usr/share/nginx/html), index.html for
 *    a directory, 404 otherwise, and writes an access log line to stdout.
 *    No other directive is read.
 *  - SIGTERM and SIGINT (fast shutdown) and SIGQUIT (graceful shutdown) stop
 *    the worker and the master; SIGHUP is ignored; a worker that dies is
 *    replaced. As PID 1 it reaps every child.
 *  - It always runs in the foreground: -g DIRECTIVES is accepted and ignored
 *    (critest's images pass -g "daemon off;"), -c FILE names the main config
 *    file, -v and -V print a version line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VERSION_LINE "nginx version: nginx/1.14.2 (ucri conformance stand-in, not nginx)"
#define SERVER_HEADER "nginx/1.14.2 (ucri conformance stand-in)"
#define MAX_LISTEN 8

extern char **environ;

static char *title_area;
static size_t title_size;
static char pid_path[4096] = "/var/run/nginx.pid";
static char root_dir[4096] = "/usr/share/nginx/html";
static int listen_fds[MAX_LISTEN];
static int nlisten;

static void logmsg(const char *level, const char *fmt, ...) {
  char buf[1024];
  time_t now = time(NULL);
  struct tm tm;
  size_t n;
  va_list ap;

  localtime_r(&now, &tm);
  n = strftime(buf, sizeof buf, "%Y/%m/%d %H:%M:%S ", &tm);
  n += snprintf(buf + n, sizeof buf - n, "[%s] %d#0: ", level, (int)getpid());
  va_start(ap, fmt);
  if (n < sizeof buf)
    n += vsnprintf(buf + n, sizeof buf - n, fmt, ap);
  va_end(ap);
  if (n > sizeof buf - 2)
    n = sizeof buf - 2;
  buf[n++] = '\n';
  /* nginx logs to stderr (error_log /dev/stderr in the docker images). */
  if (write(2, buf, n) < 0) {
  }
}

static void fatal(const char *what) {
  logmsg("emerg", "%s failed (%d: %s)", what, errno, strerror(errno));
  exit(1);
}

/* The argv and environment strings are one contiguous block; nginx's
 * ngx_init_setproctitle() copies the environment to the heap and uses the
 * whole block for the title. */
static void init_title(int argc, char **argv) {
  char *end = argv[0];
  int i, n;
  char **env;

  for (i = 0; i < argc; i++)
    if (argv[i] == end)
      end = argv[i] + strlen(argv[i]) + 1;
  for (n = 0; environ[n]; n++)
    ;
  env = calloc(n + 1, sizeof *env);
  if (!env)
    fatal("calloc");
  for (i = 0; i < n; i++) {
    if (environ[i] == end)
      end = environ[i] + strlen(environ[i]) + 1;
    env[i] = strdup(environ[i]);
    if (!env[i])
      fatal("strdup");
  }
  environ = env;
  title_area = argv[0];
  title_size = end - argv[0];
}

static void set_title(const char *title) {
  size_t n = strlen(title);

  if (n >= title_size)
    n = title_size - 1;
  memcpy(title_area, title, n);
  memset(title_area + n, 0, title_size - n);
}

/* Reads FILE and calls fn(directive, value) for each "directive value"
 * pair, ignoring comments and blocks' structure. */
static void scan_conf(const char *file, void (*fn)(const char *, const char *)) {
  char buf[65536], word[2][4096];
  int fd = open(file, O_RDONLY | O_CLOEXEC), nword = 0, comment = 0;
  ssize_t len, i;
  size_t wlen = 0;

  if (fd < 0)
    return;
  len = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (len < 0)
    return;
  buf[len++] = '\n';
  for (i = 0; i < len; i++) {
    char c = buf[i];
    if (comment) {
      comment = c != '\n';
      continue;
    }
    if (c == '#') {
      comment = 1;
      c = ' ';
    }
    if (c == ';' || c == '{' || c == '}' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (wlen > 0) {
        word[nword < 2 ? nword : 1][wlen < 4096 ? wlen : 4095] = 0;
        if (nword < 2)
          nword++;
        wlen = 0;
      }
      if (c == ';' || c == '{' || c == '}') {
        if (nword == 2)
          fn(word[0], word[1]);
        nword = 0;
      }
      continue;
    }
    if (nword < 2 && wlen < 4095)
      word[nword][wlen] = c;
    wlen++;
  }
}

static void main_conf(const char *key, const char *value) {
  if (strcmp(key, "pid") == 0)
    snprintf(pid_path, sizeof pid_path, "%s", value);
}

static void add_listener(int family, const char *addr, int port) {
  struct sockaddr_storage ss;
  socklen_t len;
  int fd, one = 1;

  if (nlisten == MAX_LISTEN)
    return;
  memset(&ss, 0, sizeof ss);
  if (family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1)
      s6->sin6_addr = in6addr_any;
    len = sizeof *s6;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1)
      s4->sin_addr.s_addr = htonl(INADDR_ANY);
    len = sizeof *s4;
  }
  fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    fatal("socket()");
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
    logmsg("emerg", "bind() to %s%s%s:%d failed (%d: %s)", family == AF_INET6 ? "[" : "",
           *addr ? addr : (family == AF_INET6 ? "::" : "0.0.0.0"), family == AF_INET6 ? "]" : "",
           port, errno, strerror(errno));
    exit(1);
  }
  if (listen(fd, 511) < 0)
    fatal("listen()");
  listen_fds[nlisten++] = fd;
}

static void server_conf(const char *key, const char *value) {
  char addr[256] = "";
  const char *port;

  if (strcmp(key, "root") == 0) {
    snprintf(root_dir, sizeof root_dir, "%s", value);
    return;
  }
  if (strcmp(key, "listen") != 0)
    return;
  if (value[0] == '[') {
    const char *close = strchr(value, ']');
    if (!close || close[1] != ':')
      return;
    snprintf(addr, sizeof addr, "%.*s", (int)(close - value - 1), value + 1);
    add_listener(AF_INET6, addr, atoi(close + 2));
    return;
  }
  port = strrchr(value, ':');
  if (port) {
    snprintf(addr, sizeof addr, "%.*s", (int)(port - value), value);
    port++;
  } else {
    port = value;
  }
  add_listener(AF_INET, addr, atoi(port));
}

static void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR)
        continue;
      return;
    }
    p += w;
    n -= w;
  }
}

static void serve(int fd, const struct sockaddr_storage *peer) {
  char req[8192], method[16] = "", target[4096] = "", version[16] = "";
  char path[8192], head[1024], date[64], ip[INET6_ADDRSTRLEN] = "-", logline[6000];
  const char *status = "200 OK", *type = "text/html";
  static const char notfound[] =
      "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body bgcolor=\"white\">\r\n"
      "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
  static const char notallowed[] =
      "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body bgcolor=\"white\">\r\n"
      "<center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
  struct timeval tv = {10, 0};
  struct stat st;
  size_t len = 0;
  long long body = 0;
  int file = -1, code = 200, hn;
  time_t now;
  struct tm tm;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  while (len < sizeof req - 1) {
    ssize_t r = read(fd, req + len, sizeof req - 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += r;
    req[len] = 0;
    if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
      break;
  }
  req[len] = 0;
  if (len == 0)
    return;
  sscanf(req, "%15s %4095s %15s", method, target, version);

  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    code = 405;
    status = "405 Not Allowed";
  } else {
    char *q = strpbrk(target, "?#");
    if (q)
      *q = 0;
    if (target[0] != '/' || strstr(target, "/..")) {
      code = 404;
    } else {
      snprintf(path, sizeof path, "%s%s", root_dir, target);
      if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t pl = strlen(path);
        snprintf(path + pl, sizeof path - pl, "%sindex.html", pl && path[pl - 1] == '/' ? "" : "/");
      }
      file = open(path, O_RDONLY | O_CLOEXEC);
      if (file < 0 || fstat(file, &st) < 0 || !S_ISREG(st.st_mode)) {
        code = 404;
      } else {
        body = st.st_size;
        if (strlen(path) > 4 && strcmp(path + strlen(path) - 4, ".txt") == 0)
          type = "text/plain";
      }
    }
    if (code == 404)
      status = "404 Not Found";
  }
  if (code != 200) {
    if (file >= 0)
      close(file);
    file = -1;
    body = code == 404 ? (long long)sizeof notfound - 1 : (long long)sizeof notallowed - 1;
  }

  now = time(NULL);
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  hn = snprintf(head, sizeof head,
                "HTTP/1.1 %s\r\nServer: %s\r\nDate: %s\r\nContent-Type: %s\r\n"
                "Content-Length: %lld\r\nConnection: close\r\n\r\n",
                status, SERVER_HEADER, date, type, body);
  send_all(fd, head, hn);
  if (strcmp(method, "HEAD") != 0) {
    if (file >= 0) {
      char chunk[16384];
      ssize_t r;
      while ((r = read(file, chunk, sizeof chunk)) > 0)
        send_all(fd, chunk, r);
    } else {
      send_all(fd, code == 404 ? notfound : notallowed, body);
    }
  }
  if (file >= 0)
    close(file);

  if (peer->ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, ip, sizeof ip);
  else if (peer->ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, ip, sizeof ip);
  localtime_r(&now, &tm);
  strftime(date, sizeof date, "%d/%b/%Y:%H:%M:%S %z", &tm);
  {
    char *eol = strpbrk(req, "\r\n");
    if (eol)
      *eol = 0;
  }
  hn = snprintf(logline, sizeof logline, "%s - - [%s] \"%.4000s\" %d %lld \"-\" \"-\"\n", ip, date, req,
                code, body);
  if (hn > (int)sizeof logline - 1)
    hn = sizeof logline - 1;
  send_all(1, logline, hn);
}

static void worker(pid_t master) {
  struct pollfd pfd[MAX_LISTEN];
  sigset_t none;
  int i;

  sigemptyset(&none);
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGQUIT, SIG_DFL);
  signal(SIGHUP, SIG_IGN);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  sigprocmask(SIG_SETMASK, &none, NULL);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != master)
    _exit(0); /* the master died before prctl took effect */
  set_title("nginx: worker process");
  for (i = 0; i < nlisten; i++) {
    pfd[i].fd = listen_fds[i];
    pfd[i].events = POLLIN;
  }
  for (;;) {
    if (poll(pfd, nlisten, -1) < 0) {
      if (errno == EINTR)
        continue;
      fatal("poll()");
    }
    for (i = 0; i < nlisten; i++) {
      struct sockaddr_storage peer;
      socklen_t plen = sizeof peer;
      int c;

      if (!(pfd[i].revents & POLLIN))
        continue;
      c = accept4(listen_fds[i], (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
      if (c < 0)
        continue;
      serve(c, &peer);
      shutdown(c, SHUT_WR);
      close(c);
    }
  }
}

static pid_t spawn_worker(void) {
  pid_t master = getpid(), pid = fork();

  if (pid < 0)
    fatal("fork()");
  if (pid == 0) {
    worker(master);
    _exit(0);
  }
  logmsg("notice", "start worker process %d", (int)pid);
  return pid;
}

static void write_pid(void) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  int fd = open(pid_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  if (fd < 0) {
    logmsg("emerg", "open() \"%s\" failed (%d: %s)", pid_path, errno, strerror(errno));
    exit(1);
  }
  send_all(fd, buf, n);
  close(fd);
}

int main(int argc, char **argv) {
  char conf[4096] = "/etc/nginx/nginx.conf", title[4096];
  size_t tl;
  sigset_t set;
  pid_t child;
  int i, stopping = 0;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "-V") == 0) {
      fprintf(stderr, "%s\n", VERSION_LINE);
      return 0;
    } else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
      snprintf(conf, sizeof conf, "%s", argv[++i]);
    } else if (strcmp(argv[i], "-g") == 0 && i + 1 < argc) {
      i++;
    }
  }
  /* The title nginx gives its master: "master process " and its argv. */
  tl = snprintf(title, sizeof title, "nginx: master process");
  for (i = 0; i < argc && tl < sizeof title; i++)
    tl += snprintf(title + tl, sizeof title - tl, " %s", argv[i]);

  scan_conf(conf, main_conf);
  scan_conf("/etc/nginx/conf.d/default.conf", server_conf);
  if (nlisten == 0)
    add_listener(AF_INET, "", 80);

  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGQUIT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);

  init_title(argc, argv);
  set_title(title);
  write_pid();
  child = spawn_worker();

  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&set, &info), status;
    pid_t pid;

    if (sig < 0)
      continue;
    switch (sig) {
    case SIGCHLD:
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid != child)
          continue;
        if (stopping)
          break;
        logmsg("alert", "worker process %d exited with status %d", (int)pid, status);
        sleep(1);
        child = spawn_worker();
      }
      break;
    case SIGHUP:
      logmsg("notice", "signal 1 (SIGHUP) received, ignored");
      break;
    default:
      logmsg("notice", "signal %d (SIG%s) received, %s", sig, sigabbrev_np(sig),
             sig == SIGQUIT ? "shutting down" : "exiting");
      stopping = 1;
      kill(child, sig == SIGQUIT ? SIGQUIT : SIGTERM);
      while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
        ;
      unlink(pid_path);
      logmsg("notice", "exit");
      return 0;
    }
  }
}
