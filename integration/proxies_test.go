package integration

// Burrow among the programs that stand between clients and servers in
// networks that allow only HTTPS: squid as the CONNECT proxy a client must
// use (Basic and NTLM authentication), nginx terminating TLS in front of a
// --tls off server, HAProxy balancing two servers, and --backend making the
// server look like a website. The tests run the real programs on loopback
// with configs generated here; docs/deployment.md shows the same configs.
// A test whose program is not installed is skipped, saying which package
// provides it.

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/burrowtun/burrow/integration/harness"
	"golang.org/x/crypto/bcrypt"
)

// extPackage names the package that provides each external program, for
// skip messages.
var extPackage = map[string]string{
	"squid":    "squid",
	"nginx":    "nginx",
	"haproxy":  "haproxy",
	"ip":       "iproute2",
	"nft":      "nftables",
	"iptables": "iptables",
}

// extProgram returns the path of an external program, looking in PATH and
// then in the sbin directories (where daemons live, and which a test's PATH
// may lack), or skips the test saying what to install.
func extProgram(t *testing.T, name string) string {
	t.Helper()
	if p, ok := findExtProgram(name); ok {
		return p
	}
	t.Skipf("%s is not installed (Debian package %s; .ci/deps.sh installs it)", name, extPackage[name])
	return ""
}

func findExtProgram(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// randomConfigPort picks a port for a program that must be given one in
// its config. It lies below Linux's ephemeral range (32768-60999), where
// listeners on port 0 and outgoing connections take theirs; when it is
// taken anyway, the program fails to bind and the caller tries another.
func randomConfigPort() int { return 20000 + rand.IntN(12000) }

// waitStarted waits until ready reports that p is serving (true), or p
// logs a line matching bindFailed (false: the caller stops it and tries
// another port). It fails the test if p exits otherwise or is not ready
// within harness.StartTimeout.
func waitStarted(t *testing.T, p *harness.Proc, ready func(log string) bool, bindFailed *regexp.Regexp) bool {
	t.Helper()
	deadline := time.Now().Add(harness.StartTimeout)
	for {
		exited := p.Exited()
		log := p.Stderr.String() + p.Stdout.String()
		if bindFailed.MatchString(log) {
			t.Logf("%s could not bind its port; trying another: %s", p.Name, bindFailed.FindString(log))
			return false
		}
		if !exited && ready(log) {
			return true
		}
		if exited {
			t.Fatalf("%s exited (code %d, %v) before it was ready", p.Name, p.ExitCode, p.WaitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v", p.Name, harness.StartTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readyOnLog returns a ready func for waitStarted that looks for re.
func readyOnLog(re *regexp.Regexp) func(string) bool {
	return func(log string) bool { return re.MatchString(log) }
}

// sharedDir makes a directory that a daemon dropping root privileges (squid
// runs as user proxy) can read, which t.TempDir's private parents do not
// allow, and removes it when the test ends.
func sharedDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "burrow-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clearProxyEnv clears the proxy variables of the machine running the
// tests: a client follows HTTPS_PROXY even to loopback, as curl does.
var clearProxyEnv = []string{"HTTPS_PROXY=", "https_proxy=", "ALL_PROXY=", "all_proxy=", "NO_PROXY=", "no_proxy="}

// launchClientEnv starts 'burrow client' as harness.TestUser with the proxy
// variables cleared and then env added, and does not wait for it.
func launchClientEnv(t *testing.T, name string, env []string, serverURL string, flags []string, remotes ...string) *harness.Proc {
	t.Helper()
	args := append([]string{"client"}, flags...)
	args = append(args, serverURL)
	args = append(args, remotes...)
	env = append(append(append([]string{}, clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass), env...)
	return burrow.Start(t, name, "", env, args...)
}

// waitClientReady waits until a launched client has bound its n forwards
// and connected, and returns the forwards' local addresses.
func waitClientReady(t *testing.T, p *harness.Proc, n int) []string {
	t.Helper()
	var locals []string
	for _, m := range p.WaitLogCount(t, harness.ForwardLine, n, harness.StartTimeout) {
		locals = append(locals, m[1])
	}
	p.WaitLog(t, harness.ConnectedLine, harness.StartTimeout)
	return locals
}

// startClientEnv is burrow.StartClient with a process name, the machine's proxy
// variables cleared and env added.
func startClientEnv(t *testing.T, name string, env []string, serverURL string, flags []string, remotes ...string) (*harness.Proc, []string) {
	t.Helper()
	p := launchClientEnv(t, name, env, serverURL, flags, remotes...)
	return p, waitClientReady(t, p, len(remotes))
}

// stopClientCleanly stops a client with SIGTERM and waits for it to exit
// cleanly, which closes its connection (and so makes squid log the tunnel).
func stopClientCleanly(t *testing.T, p *harness.Proc) {
	t.Helper()
	p.Signal(t, syscall.SIGTERM)
	if code := p.WaitExit(t, harness.ExitTimeout); code != 0 {
		t.Errorf("%s exited with code %d after SIGTERM, want 0", p.Name, code)
	}
}

var (
	lostSessionLine = regexp.MustCompile(`msg="connection lost; reconnecting"`)
	sessionEndLine  = regexp.MustCompile(`msg="session closed"`)
)

// ---- squid ----

// squidConfig describes a squid that lets clients CONNECT only to some
// ports, as proxies that allow only HTTPS do with port 443.
type squidConfig struct {
	host     string            // address to listen on
	sslPorts []string          // the only ports CONNECT may reach
	basic    map[string]string // Basic users and passwords (basic_ncsa_auth), or
	ntlm     bool              // NTLM with ntlm_fake_auth, which accepts any credentials, or
	clients  string            // without authentication: the source range allowed
	// bump, when set, makes squid a TLS-inspecting proxy (ssl-bump): it
	// terminates the client's TLS with certificates this CA signs on the
	// fly and opens its own TLS to the server, which it does not verify.
	bump *inspectionCA
	// upgrades lets a bumping squid pass WebSocket upgrades; without it
	// squid removes them, as its default configuration does.
	upgrades bool
}

type squid struct {
	*harness.Proc
	addr      string // host:port it listens on
	accessLog string
}

var (
	squidReady      = regexp.MustCompile(`Accepting (SSL bumped )?HTTP Socket connections at`)
	squidBindFailed = regexp.MustCompile(`(?i)cannot bind socket|Unable to open HTTP Socket`)
)

// startSquid runs squid in the foreground (-N) with a config of its own
// under a temp dir, no cache, its logs there, and a service name of its own
// so that parallel squids keep apart their shared memory segments (removed
// when the test ends).
func startSquid(t *testing.T, cfg squidConfig) *squid {
	t.Helper()
	bin := extProgram(t, "squid")
	helper := func(name string) string {
		for _, dir := range []string{"/usr/lib/squid", "/usr/lib64/squid", "/usr/libexec/squid"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
		}
		t.Skipf("squid's helper %s is not installed (Debian package squid)", name)
		return ""
	}
	dir := sharedDir(t, "squid")
	run := filepath.Join(dir, "run") // written by squid, which drops root privileges
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	var effectiveUser string
	if os.Geteuid() == 0 {
		for _, name := range []string{"proxy", "squid", "nobody"} {
			if u, err := user.Lookup(name); err == nil {
				uid, _ := strconv.Atoi(u.Uid)
				gid, _ := strconv.Atoi(u.Gid)
				if err := os.Chown(run, uid, gid); err != nil {
					t.Fatal(err)
				}
				effectiveUser = name
				break
			}
		}
	}

	var access strings.Builder
	switch {
	case cfg.basic != nil:
		passwd := filepath.Join(dir, "passwd")
		var lines strings.Builder
		for name, pass := range cfg.basic {
			hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&lines, "%s:%s\n", name, hash)
		}
		if err := os.WriteFile(passwd, []byte(lines.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		prog := helper("basic_ncsa_auth")
		checkNCSA(t, prog, passwd, cfg.basic)
		fmt.Fprintf(&access, "auth_param basic program %s %s\n", prog, passwd)
		access.WriteString("auth_param basic realm proxy\nacl users proxy_auth REQUIRED\nhttp_access allow users\n")
	case cfg.ntlm:
		fmt.Fprintf(&access, "auth_param ntlm program %s\n", helper("ntlm_fake_auth"))
		access.WriteString("acl users proxy_auth REQUIRED\nhttp_access allow users\n")
	default:
		fmt.Fprintf(&access, "acl clients src %s\nhttp_access allow clients\n", cfg.clients)
	}

	confPath := filepath.Join(dir, "squid.conf")
	for range 5 {
		port := randomConfigPort()
		var conf strings.Builder
		fmt.Fprintf(&conf, "http_port %s", net.JoinHostPort(cfg.host, strconv.Itoa(port)))
		if cfg.bump != nil {
			fmt.Fprintf(&conf, " ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=4MB tls-cert=%s tls-key=%s",
				cfg.bump.certFile, cfg.bump.keyFile)
		}
		conf.WriteString("\n")
		if effectiveUser != "" {
			fmt.Fprintf(&conf, "cache_effective_user %s\n", effectiveUser)
		}
		fmt.Fprintf(&conf, "visible_hostname burrow-test\npid_filename %[1]s/squid.pid\ncache_log %[1]s/cache.log\n"+
			"access_log stdio:%[1]s/access.log\ncoredump_dir %[1]s\n", run)
		conf.WriteString("cache deny all\npinger_enable off\nshutdown_lifetime 1 seconds\n")
		if cfg.bump != nil {
			writeBumpConfig(t, &conf, helper("security_file_certgen"), run, cfg.bump, cfg.upgrades)
		}
		fmt.Fprintf(&conf, "acl SSL_ports port %s\nacl CONNECT method CONNECT\nhttp_access deny CONNECT !SSL_ports\n",
			strings.Join(cfg.sslPorts, " "))
		conf.WriteString(access.String())
		conf.WriteString("http_access deny all\n")
		if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		service := fmt.Sprintf("burrowtest%d", rand.Uint32())
		// Registered first so that it runs after squid has been stopped.
		t.Cleanup(func() {
			shm, _ := filepath.Glob("/dev/shm/" + service + "-*")
			for _, f := range shm {
				os.Remove(f)
			}
		})
		p := harness.StartCmd(t, "squid", exec.Command(bin, "-N", "-d", "1", "-n", service, "-f", confPath), syscall.SIGTERM)
		if waitStarted(t, p, readyOnLog(squidReady), squidBindFailed) {
			return &squid{Proc: p, addr: net.JoinHostPort(cfg.host, strconv.Itoa(port)), accessLog: filepath.Join(run, "access.log")}
		}
		p.Kill(t)
	}
	t.Fatal("squid could not bind a port in 5 attempts")
	return nil
}

// checkNCSA asks basic_ncsa_auth itself whether it accepts the passwd file
// written for it, so that a hash format its crypt(3) lacks fails here, clearly.
func checkNCSA(t *testing.T, prog, passwd string, users map[string]string) {
	t.Helper()
	var in strings.Builder
	for name, pass := range users {
		fmt.Fprintf(&in, "%s %s\n", name, pass)
	}
	cmd := exec.Command(prog, passwd)
	cmd.Stdin = strings.NewReader(in.String())
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v", prog, passwd, err)
	}
	if got := strings.Count(string(out), "OK"); got != len(users) {
		t.Fatalf("%s rejects the bcrypt hashes written for it: %q", prog, out)
	}
}

// waitTunnelLogged waits until squid's access log shows a CONNECT tunnel to
// target for user ("-" without authentication), which squid writes when the
// tunnel closes.
func (s *squid) waitTunnelLogged(t *testing.T, target, user string) {
	t.Helper()
	re := regexp.MustCompile(`TCP_TUNNEL/200 \d+ CONNECT ` + regexp.QuoteMeta(target) + ` ` + regexp.QuoteMeta(user) + ` `)
	deadline := time.Now().Add(harness.IOTimeout)
	for {
		data, _ := os.ReadFile(s.accessLog)
		if re.Match(data) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("squid's access log has no line matching %q within %v:\n%s", re, harness.IOTimeout, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *squid) accessLogMentions(user string) bool {
	data, _ := os.ReadFile(s.accessLog)
	return regexp.MustCompile(`CONNECT \S+ ` + regexp.QuoteMeta(user) + ` `).Match(data)
}

// httpProxyURL is http://user:pass@addr with both escaped as a URL needs.
func httpProxyURL(user, pass, addr string) string {
	if user == "" {
		return "http://" + addr
	}
	return "http://" + url.UserPassword(user, pass).String() + "@" + addr
}

// TestSquid reaches a server through squid as the only way out: a CONNECT
// proxy that allows only the server's port (as real ones allow only 443)
// and wants Basic credentials; wrong or missing credentials and a port the
// proxy forbids end the client at once with one clear line; the proxy is
// also taken from HTTPS_PROXY/ALL_PROXY unless NO_PROXY; and NTLM with a
// DOMAIN\user works against a squid that wants NTLM.
func TestSquid(t *testing.T) {
	t.Parallel()
	extProgram(t, "squid")
	const proxyPass = "s3cr3t/p@ss" // needs escaping in a URL; basic_ncsa_auth takes it as is
	users := map[string]string{}
	for _, u := range []string{"basic", "envupper", "envlower", "envall", "envskipped", "noproxyloop"} {
		users[u] = proxyPass
	}
	srv := burrow.StartTestServer(t, nil)
	_, srvPort, _ := net.SplitHostPort(srv.Addr)
	sq := startSquid(t, squidConfig{host: "127.0.0.1", sslPorts: []string{srvPort}, basic: users})
	echo := harness.StartEcho(t)
	pin := []string{"--fingerprint", srv.Cert.Fingerprint}
	remote := "127.0.0.1:0:" + echo

	t.Run("basic auth", func(t *testing.T) {
		t.Parallel()
		flags := append([]string{"--proxy", httpProxyURL("basic", proxyPass, sq.addr)}, pin...)
		p, locals := startClientEnv(t, "client", nil, srv.URL, flags, remote)
		wantLogLine(t, p, "using proxy", "proxy=http://basic:xxxxx@"+sq.addr)
		harness.EchoRoundTrip(t, locals[0], []byte("through squid with Basic credentials"))
		harness.EchoRoundTrip(t, locals[0], bytes.Repeat([]byte("0123456789abcdef"), 64<<10))
		stopClientCleanly(t, p)
		sq.waitTunnelLogged(t, srv.Addr, "basic")
		wantNoSecret(t, p, proxyPass)
	})

	refusals := []struct {
		name, proxyUser, proxyPass string
		server                     string // URL
		want                       []string
	}{
		{"wrong password", "basic", "not-the-Pa55word", srv.URL, []string{
			"burrow: proxy http://basic:xxxxx@" + sq.addr + " refused CONNECT to " + srv.Addr + ": 407 Proxy Authentication Required",
			"check the proxy credentials"}},
		{"no credentials", "", "", srv.URL, []string{
			"burrow: proxy http://" + sq.addr + " refused CONNECT to " + srv.Addr + ": 407 Proxy Authentication Required",
			"check the proxy credentials"}},
		{"port not allowed", "basic", proxyPass, "wss://" + echo, []string{
			"burrow: proxy http://basic:xxxxx@" + sq.addr + " refused CONNECT to " + echo + ": 403 Forbidden",
			"does not allow this destination"}},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			env := append(append([]string{}, clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass)
			args := append([]string{"client", "--proxy", httpProxyURL(tc.proxyUser, tc.proxyPass, sq.addr)}, pin...)
			p, line := runFailing(t, env, append(args, tc.server, remote)...)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the client took %v to give up, want a few seconds at most", took.Round(time.Millisecond))
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("error line %q does not contain %q", line, w)
				}
			}
			if tc.proxyPass != "" {
				wantNoSecret(t, p, tc.proxyPass)
			}
			if p.CountLog(harness.ConnectedLine) != 0 {
				t.Errorf("the client logged that it connected although the proxy refused it")
			}
		})
	}

	// The proxy from the environment, as curl takes it. NO_PROXY must
	// name loopback for a loopback server to be reached directly.
	envCases := []struct {
		name    string
		env     []string
		user    string // proxy user; its tunnel must be logged unless direct
		proxied bool
	}{
		{"HTTPS_PROXY", []string{"HTTPS_PROXY=" + httpProxyURL("envupper", proxyPass, sq.addr)}, "envupper", true},
		{"https_proxy", []string{"https_proxy=" + httpProxyURL("envlower", proxyPass, sq.addr)}, "envlower", true},
		{"ALL_PROXY", []string{"ALL_PROXY=" + httpProxyURL("envall", proxyPass, sq.addr)}, "envall", true},
		{"NO_PROXY lists the server", []string{
			"HTTPS_PROXY=" + httpProxyURL("envskipped", proxyPass, sq.addr),
			"NO_PROXY=example.com,127.0.0.1"}, "envskipped", false},
		{"NO_PROXY lists other hosts", []string{
			"HTTPS_PROXY=" + httpProxyURL("noproxyloop", proxyPass, sq.addr),
			"NO_PROXY=localhost,.example.com,10.0.0.0/8"}, "noproxyloop", true},
	}
	for _, tc := range envCases {
		t.Run("env "+tc.name, func(t *testing.T) {
			t.Parallel()
			p, locals := startClientEnv(t, "client", tc.env, srv.URL, pin, remote)
			harness.EchoRoundTrip(t, locals[0], []byte("proxy from the environment: "+tc.name))
			stopClientCleanly(t, p)
			if tc.proxied {
				wantLogLine(t, p, "using proxy", "proxy=http://"+tc.user+":xxxxx@"+sq.addr)
				sq.waitTunnelLogged(t, srv.Addr, tc.user)
			} else {
				if strings.Contains(p.Stderr.String(), `msg="using proxy"`) {
					t.Errorf("the client used the proxy although NO_PROXY lists the server")
				}
				if sq.accessLogMentions(tc.user) {
					t.Errorf("squid logged a CONNECT by %s although NO_PROXY lists the server", tc.user)
				}
			}
			wantNoSecret(t, p, proxyPass)
		})
	}

	t.Run("ntlm", func(t *testing.T) {
		t.Parallel()
		ntlmSquid := startSquid(t, squidConfig{host: "127.0.0.1", sslPorts: []string{srvPort}, ntlm: true})
		// DOMAIN\user, the backslash escaped as %5C.
		proxy := "http://CORP%5Cbob:ntlm-Pa55@" + ntlmSquid.addr
		p := launchClientEnv(t, "client", nil, srv.URL, append([]string{"--proxy", proxy}, pin...), remote)
		locals := waitClientReady(t, p, 1)
		harness.EchoRoundTrip(t, locals[0], []byte("through squid with NTLM"))
		stopClientCleanly(t, p)
		ntlmSquid.waitTunnelLogged(t, srv.Addr, `CORP\\bob`)
		wantNoSecret(t, p, "ntlm-Pa55")
	})
}

// waitFirstLog polls p's log until one of res matches and returns the index of
// the first that does (in the order given). It fails the test on timeout
// or if p exits first.
func waitFirstLog(t *testing.T, p *harness.Proc, timeout time.Duration, res ...*regexp.Regexp) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited()
		log := p.Stderr.String()
		for i, re := range res {
			if re.MatchString(log) {
				return i
			}
		}
		if exited {
			t.Fatalf("%s exited (code %d) before logging any of %q", p.Name, p.ExitCode, res)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged none of %q within %v", p.Name, res, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantLogLine fails the test unless p logged a line with message msg that
// contains every one of fields.
func wantLogLine(t *testing.T, p *harness.Proc, msg string, fields ...string) {
	t.Helper()
	for line := range strings.Lines(p.Stderr.String()) {
		if !strings.Contains(line, `msg="`+msg+`"`) && !strings.Contains(line, "msg="+msg+" ") {
			continue
		}
		ok := true
		for _, f := range fields {
			ok = ok && strings.Contains(line, f)
		}
		if ok {
			return
		}
	}
	t.Errorf("%s logged no %q line with %q", p.Name, msg, fields)
}

// wantNoSecret fails the test if p wrote secret anywhere, as is or escaped as
// in a URL.
func wantNoSecret(t *testing.T, p *harness.Proc, secret string) {
	t.Helper()
	escaped := strings.TrimPrefix(url.UserPassword("x", secret).String(), "x:")
	out := p.Stdout.String() + p.Stderr.String()
	if strings.Contains(out, secret) || strings.Contains(out, escaped) {
		t.Errorf("%s wrote the password %q", p.Name, secret)
	}
}

// ---- nginx ----

// startServerBehindProxy starts a --tls off server on a loopback port of its own
// with authfile and args, for a TLS-terminating proxy to stand in front of.
func startServerBehindProxy(t *testing.T, name, authfile string, args ...string) *harness.Server {
	t.Helper()
	full := append([]string{"server", "--tls", "off", "--listen", "127.0.0.1:0", "--authfile", authfile}, args...)
	p := burrow.Start(t, name, "", nil, full...)
	m := p.WaitLog(t, regexp.MustCompile(`msg=listening addr=(\S+)`), harness.StartTimeout)
	return &harness.Server{Proc: p, Addr: m[1], URL: "http://" + m[1], Authfile: authfile}
}

// nginxConf is the http part of nginx's config: TLS on the public port,
// the WebSocket upgrade passed to two --tls off servers (one location
// each), and a 404 for everything else and for requests that do not name
// the tunnel's virtual host, whose default server has a certificate of its
// own. proxy_bind gives nginx's side of the
// upstream connections an address of its own, 127.0.0.3, so that the
// servers can tell nginx (--trusted-proxy 127.0.0.3/32) from the clients.
const nginxConf = `events { worker_connections 1024; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }

    server {
        listen %[2]s ssl default_server;
        ssl_certificate %[8]s;
        ssl_certificate_key %[9]s;
        return 404;
    }

    server {
        listen %[2]s ssl;
        server_name tunnel.example;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;

        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_read_timeout %[7]ds;
        proxy_send_timeout %[7]ds;
        proxy_bind 127.0.0.3;

        location = /tunnel {
            proxy_pass http://%[5]s;
        }
        location = /idle {
            proxy_pass http://%[6]s;
        }
        location / {
            return 404;
        }
    }
}
`

var nginxBindFailed = regexp.MustCompile(`bind\(\) to \S+ failed`)

// startNginx runs nginx in the foreground as a single process (so that
// SIGKILL by PID leaves no worker behind) in front of the servers at
// tunnel and idle, and returns the address of its TLS port once it serves
// cert there for tunnel.example (and other for other names).
func startNginx(t *testing.T, cert, other harness.CertPair, tunnel, idle string, readTimeout time.Duration) string {
	t.Helper()
	bin := extProgram(t, "nginx")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	for range 5 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(randomConfigPort()))
		text := fmt.Sprintf(nginxConf, dir, addr, cert.CertFile, cert.KeyFile, tunnel, idle, int(readTimeout.Seconds()),
			other.CertFile, other.KeyFile)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		global := fmt.Sprintf("daemon off; master_process off; pid %s/nginx.pid; error_log stderr notice;", dir)
		p := harness.StartCmd(t, "nginx", exec.Command(bin, "-e", "stderr", "-p", dir, "-c", conf, "-g", global), syscall.SIGTERM)
		serving := func(string) bool { return servedFingerprint(addr, "tunnel.example") == cert.Fingerprint }
		if waitStarted(t, p, serving, nginxBindFailed) {
			return addr
		}
		p.Kill(t)
	}
	t.Fatal("nginx could not bind a port in 5 attempts")
	return ""
}

// servedFingerprint returns the fingerprint (as burrow prints it) of the
// certificate served at addr for sni, or "" if there is none.
func servedFingerprint(addr, sni string) string {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return ""
	}
	defer c.Close()
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// TestNginx puts nginx in front of --tls off servers, terminating TLS and
// passing the WebSocket upgrade on, with a short proxy_read_timeout: the
// client pins nginx's certificate and names the virtual host (--hostname,
// --sni) and the location (URL path, server --path); a large transfer
// arrives intact; an idle session with --keepalive 1s on both ends outlives
// nginx's timeout while one without short keepalives is cut; and the
// server names the client from nginx's X-Forwarded-For, but believes that
// header only from nginx.
func TestNginx(t *testing.T) {
	t.Parallel()
	extProgram(t, "nginx")
	const readTimeout = 3 * time.Second
	nginxCert := burrow.NewCert(t, "tunnel.example")
	defaultCert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	trusted := []string{"--trusted-proxy", "127.0.0.3/32"}
	fast := startServerBehindProxy(t, "server-keepalive", authfile, append(trusted, "--path", "/tunnel", "--keepalive", "1s")...)
	slow := startServerBehindProxy(t, "server-idle", authfile, append(trusted, "--path", "/idle", "--keepalive", "1m")...)
	addr := startNginx(t, nginxCert, defaultCert, fast.Addr, slow.Addr, readTimeout)
	echo := harness.StartEcho(t)
	remote := "127.0.0.1:0:" + echo
	vhost := []string{"--fingerprint", nginxCert.Fingerprint, "--hostname", "tunnel.example", "--sni", "tunnel.example"}

	client, locals := startClientEnv(t, "client", nil, "wss://"+addr+"/tunnel",
		append(vhost, "--keepalive", "1s", "--header", "X-Forwarded-For: 198.51.100.7"), remote)
	idleClient, _ := startClientEnv(t, "idle-client", nil, "wss://"+addr+"/idle", append(vhost, "--keepalive", "1m"), remote)
	harness.EchoRoundTrip(t, locals[0], []byte("through nginx"))

	// The server names the client (127.0.0.1) from nginx's
	// X-Forwarded-For, not nginx (127.0.0.3) and not what the client
	// claimed in its own X-Forwarded-For.
	m := fast.WaitLog(t, regexp.MustCompile(`msg="session opened".* source=(\S+)`), harness.IOTimeout)
	if m[1] != "127.0.0.1" {
		t.Errorf("server logged the session from source=%s, want 127.0.0.1 (from nginx's X-Forwarded-For)", m[1])
	}

	t.Run("large transfer", func(t *testing.T) {
		const size = 256 << 20
		var key [32]byte
		for i := range key {
			key[i] = byte(rand.Uint32())
		}
		start := time.Now()
		got, sent, back, err := echoHashed(locals[0], rand.NewChaCha8(key), size)
		if err != nil {
			t.Fatal(err)
		}
		if got != size || sent != back {
			t.Fatalf("sent %d bytes (sha256 %x), got %d back (sha256 %x)", size, sent, got, back)
		}
		took := time.Since(start)
		t.Logf("%d MiB each way through nginx in %v (%.0f MiB/s each way)", size>>20, took.Round(time.Millisecond), float64(size>>20)/took.Seconds())
	})

	t.Run("idle session outlives proxy_read_timeout", func(t *testing.T) {
		idleSince := time.Now()
		// The control: without short keepalives nginx cuts the session,
		// idle since it was opened.
		idleClient.WaitLog(t, lostSessionLine, 2*readTimeout+harness.IOTimeout)
		t.Logf("nginx cut the session of the client without short keepalives (proxy_read_timeout %v)", readTimeout)
		time.Sleep(time.Until(idleSince.Add(2 * readTimeout)))
		if client.CountLog(lostSessionLine) != 0 {
			t.Fatalf("the client with --keepalive 1s lost its session through nginx (proxy_read_timeout %v)", readTimeout)
		}
		harness.EchoRoundTrip(t, locals[0], []byte("after twice nginx's read timeout"))
		if n := client.CountLog(harness.ConnectedLine); n != 1 {
			t.Errorf("client connected %d times, want 1", n)
		}
		if n := fast.CountLog(harness.SessionOpenedLine); n != 1 {
			t.Errorf("server opened %d sessions, want 1", n)
		}
	})

	t.Run("X-Forwarded-For from others is ignored", func(t *testing.T) {
		// Straight to the server, not through nginx: the peer is not a
		// trusted proxy, so its X-Forwarded-For must not name the source.
		req := "GET /tunnel HTTP/1.1\r\nHost: tunnel.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: burrow.v1\r\n" +
			"X-Forwarded-For: 198.51.100.7\r\nAuthorization: Basic " + basicCredentials(harness.TestUser, "wrong") + "\r\n\r\n"
		resp := sendRaw(t, fast.Addr, []byte(req))
		if !bytes.HasPrefix(resp, []byte("HTTP/1.1 401 ")) {
			t.Errorf("server answered %.60q to wrong credentials, want 401", resp)
		}
		m := fast.WaitLog(t, regexp.MustCompile(`msg="login failed".* source=(\S+)`), harness.IOTimeout)
		if m[1] != "127.0.0.1" {
			t.Errorf("server logged the failed login from source=%s, want the peer 127.0.0.1 (its X-Forwarded-For is not to be believed)", m[1])
		}
	})

	// The name of the virtual host goes in the TLS handshake (--sni,
	// which picks nginx's certificate) and in the request (--hostname,
	// which picks its server block). Without either, nginx's default
	// server answers.
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"without --sni", []string{"--hostname", "tunnel.example"}, []string{"fingerprint", defaultCert.Fingerprint}},
		{"without --hostname", []string{"--sni", "tunnel.example"}, []string{"404", addr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append(append([]string{}, clearProxyEnv...), "BURROW_AUTH="+harness.TestUser+":"+harness.TestPass)
			args := append([]string{"client", "--fingerprint", nginxCert.Fingerprint}, tc.flags...)
			_, line := runFailing(t, env, append(args, "wss://"+addr+"/tunnel", remote)...)
			wantWords(t, line, tc.want...)
		})
	}
}

func basicCredentials(user, pass string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// ---- HAProxy ----

// haproxyConf passes TLS through (mode tcp) to the servers, which share a
// certificate, so one pinned fingerprint fits all. Health checks every
// 500ms take a dead server out; a connection refused is tried once more on
// another server (redispatch); timeout tunnel governs established
// sessions, which the clients' keepalives keep busy.
const haproxyConf = `global
    log stderr format raw local0 notice

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    retries 2
    option redispatch 1

frontend burrow
    bind %s
    default_backend burrow_servers

backend burrow_servers
    balance roundrobin
%s`

var (
	haproxyReady      = regexp.MustCompile(`Using \w+\(\) as the polling mechanism`)
	haproxyBindFailed = regexp.MustCompile(`cannot bind socket`)
)

// startHAProxy runs haproxy in the foreground (-db) balancing servers and
// returns its frontend's address.
func startHAProxy(t *testing.T, servers []string) string {
	t.Helper()
	bin := extProgram(t, "haproxy")
	var backends strings.Builder
	for i, s := range servers {
		fmt.Fprintf(&backends, "    server s%d %s check inter 500ms fall 1 rise 2\n", i+1, s)
	}
	conf := filepath.Join(t.TempDir(), "haproxy.cfg")
	for range 5 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(randomConfigPort()))
		if err := os.WriteFile(conf, []byte(fmt.Sprintf(haproxyConf, addr, backends.String())), 0o644); err != nil {
			t.Fatal(err)
		}
		p := harness.StartCmd(t, "haproxy", exec.Command(bin, "-db", "-V", "-f", conf), syscall.SIGTERM)
		if waitStarted(t, p, readyOnLog(haproxyReady), haproxyBindFailed) {
			return addr
		}
		p.Kill(t)
	}
	t.Fatal("haproxy could not bind a port in 5 attempts")
	return ""
}

// TestHAProxy balances 20 clients over two servers behind HAProxy, kills
// one server, and checks that its clients come back through HAProxy to the
// other within seconds and that every client's forward works again.
func TestHAProxy(t *testing.T) {
	t.Parallel()
	extProgram(t, "haproxy")
	const clients = 20
	cert := burrow.NewCert(t, "localhost", "127.0.0.1")
	authfile := filepath.Join(t.TempDir(), "users.json")
	burrow.NewUser(t, authfile, harness.TestUser, harness.TestPass)
	servers := []*harness.Server{
		burrow.StartServer(t, cert, authfile, "--keepalive", "1s"),
		burrow.StartServer(t, cert, authfile, "--keepalive", "1s"),
	}
	addr := startHAProxy(t, []string{servers[0].Addr, servers[1].Addr})
	echo := harness.StartEcho(t)

	flags := []string{"--fingerprint", cert.Fingerprint, "--keepalive", "1s", "--max-retry-interval", "1s"}
	procs := make([]*harness.Proc, clients)
	for i := range procs {
		procs[i] = launchClientEnv(t, fmt.Sprintf("client%d", i), nil, "wss://"+addr, flags, "127.0.0.1:0:"+echo)
	}
	locals := make([]string, clients)
	for i, p := range procs {
		locals[i] = waitClientReady(t, p, 1)[0]
	}
	// Sessions open on a server, and clients connected now (each
	// "connection lost" is followed by a "connected" when it is back).
	open := func(s *harness.Server) int { return s.CountLog(harness.SessionOpenedLine) - s.CountLog(sessionEndLine) }
	connectedNow := func() int {
		n := 0
		for _, p := range procs {
			if p.CountLog(harness.ConnectedLine)-p.CountLog(lostSessionLine) == 1 {
				n++
			}
		}
		return n
	}
	state := func() string {
		return fmt.Sprintf("%d sessions open on the first server, %d on the second; %d of %d clients connected",
			open(servers[0]), open(servers[1]), connectedNow(), clients)
	}
	awaitCondition(t, harness.IOTimeout, state, func() bool {
		return open(servers[0])+open(servers[1]) == clients && connectedNow() == clients
	})
	onA, onB := open(servers[0]), open(servers[1])
	t.Logf("sessions: %d on the first server, %d on the second", onA, onB)
	if onA == 0 || onB == 0 {
		t.Fatalf("HAProxy sent %d sessions to one server and %d to the other; want both used", onA, onB)
	}
	checkAllForwards(t, locals)

	lostBefore := make([]int, clients)
	for i, p := range procs {
		lostBefore[i] = p.CountLog(lostSessionLine)
	}
	killed := time.Now()
	servers[0].Kill(t)
	awaitCondition(t, 15*time.Second, state, func() bool {
		return open(servers[1]) == clients && connectedNow() == clients
	})
	t.Logf("all %d clients on the surviving server %v after the kill", clients, time.Since(killed).Round(10*time.Millisecond))
	moved := 0
	for i, p := range procs {
		if p.CountLog(lostSessionLine) > lostBefore[i] {
			moved++
		}
	}
	switch {
	case moved < onA:
		t.Errorf("%d clients reconnected, want the %d that the killed server had", moved, onA)
	case moved > onA:
		// Not the failover's doing: a session of the surviving server
		// dropped by its 1s keepalive on a loaded machine.
		t.Logf("%d clients reconnected, %d more than the killed server had", moved, moved-onA)
	}
	checkAllForwards(t, locals)
}

// awaitCondition polls cond until it holds, failing the test after timeout
// with what state says.
func awaitCondition(t *testing.T, timeout time.Duration, state func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, state())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkAllForwards sends a distinct message through every forward at once.
func checkAllForwards(t *testing.T, locals []string) {
	t.Helper()
	errs := make(chan error, len(locals))
	var wg sync.WaitGroup
	for i, l := range locals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := harness.EchoRoundTripErr(l, []byte(fmt.Sprintf("client %d through HAProxy", i))); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// ---- --backend ----

// TestBackend puts a website behind the server with --backend: a browser's
// requests to the server's TLS port get the website's pages byte for byte,
// its own 404s included, even on the tunnel's path; the tunnel answers only
// upgrades on --path.
func TestBackend(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	page := []byte("<!doctype html>\n<html><head><title>Example Corp</title></head><body><h1>Welcome</h1>\n<p>" +
		strings.Repeat("Quarterly results and other news. ", 2000) + "</p></body></html>\n")
	blob := make([]byte, 300<<10)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	notFound := []byte("<html><body>Example Corp: no such page</body></html>\n")
	type seen struct{ userAgent, accept, forwardedFor string }
	var (
		mu       sync.Mutex
		requests []seen
	)
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, seen{r.UserAgent(), r.Header.Get("Accept"), r.Header.Get("X-Forwarded-For")})
		mu.Unlock()
		w.Header().Set("X-Site", "example-corp")
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write(page)
		case "/static/report.bin":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(blob)
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			w.Write(notFound)
		}
	}))
	t.Cleanup(site.Close)

	const tunnelPath = "/static/ws/7f3a9c"
	srv := burrow.StartTestServer(t, nil, "--backend", site.URL, "--path", tunnelPath)
	hc := insecureHTTPClient()
	for _, tc := range []struct {
		path        string
		status      int
		contentType string
		body        []byte
	}{
		{"/", 200, "text/html; charset=utf-8", page},
		{"/static/report.bin", 200, "application/octet-stream", blob},
		{"/no/such/page", 404, "text/html; charset=utf-8", notFound},
		{tunnelPath, 404, "text/html; charset=utf-8", notFound}, // not an upgrade: the website answers
	} {
		req, err := http.NewRequest(http.MethodGet, "https://"+srv.Addr+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		req.Header.Set("Accept-Language", "en-US,en;q=0.5")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.contentType || resp.Header.Get("X-Site") != "example-corp" {
			t.Errorf("GET %s: HTTP %d, Content-Type %q, X-Site %q; want %d, %q, the website's", tc.path,
				resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Site"), tc.status, tc.contentType)
		}
		if !bytes.Equal(body, tc.body) {
			t.Errorf("GET %s: got %d bytes (sha256 %x), want the website's %d bytes (sha256 %x)", tc.path,
				len(body), sha256.Sum256(body), len(tc.body), sha256.Sum256(tc.body))
		}
	}
	mu.Lock()
	for _, r := range requests {
		if !strings.HasPrefix(r.userAgent, "Mozilla/5.0") || !strings.HasPrefix(r.accept, "text/html") || r.forwardedFor != "127.0.0.1" {
			t.Errorf("the website saw User-Agent %q, Accept %q, X-Forwarded-For %q; want the browser's headers and its address",
				r.userAgent, r.accept, r.forwardedFor)
		}
	}
	if len(requests) != 4 {
		t.Errorf("the website saw %d requests, want 4", len(requests))
	}
	mu.Unlock()

	echo := harness.StartEcho(t)
	_, locals := startClientEnv(t, "client", nil, "wss://"+srv.Addr+tunnelPath,
		[]string{"--fingerprint", srv.Cert.Fingerprint}, "127.0.0.1:0:"+echo)
	harness.EchoRoundTrip(t, locals[0], []byte("the tunnel behind the website"))
	mu.Lock()
	if len(requests) != 4 {
		t.Errorf("the tunnel's upgrade reached the website (%d requests, want 4)", len(requests))
	}
	mu.Unlock()
}
