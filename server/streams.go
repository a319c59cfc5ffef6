package server

import (
	"context"
	"errors"
	"github.com/burrowtun/burrow/socks"
	"github.com/burrowtun/burrow/udp"
	"io"

	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/burrowtun/burrow/mux"
)

// ReplyCode makes an access-list refusal travel as mux.CodeDenied, which
// a SOCKS listener turns into "not allowed by ruleset".
func (e *DeniedError) ReplyCode() mux.Code { return mux.CodeDenied }

// session is one client's tunnel, as the stream handlers see it.
type session struct {
	*mux.Session
	id      string
	name    string               // the user's name; fixed for the session
	user    atomic.Pointer[User] // replaced by a reload: new allow lists apply to new streams
	source  string
	carrier string // what the session's bytes travel in: websocket, stream or poll
	start   time.Time
	log     *slog.Logger
	ctx     context.Context // ends with the session
	cancel  context.CancelFunc
	streams atomic.Int64 // open streams, for MaxStreamsPerSession
}

func (s *Server) newSession(ysess *mux.Session, user *User, source, carrier string) *session {
	ctx, cancel := context.WithCancel(context.Background())
	id := newSessionID()
	sess := &session{Session: ysess, id: id, name: user.Name, source: source, carrier: carrier, start: time.Now(),
		ctx: ctx, cancel: cancel, log: s.log.With("session", id, "user", user.Name)}
	sess.user.Store(user)
	return sess
}

// serveSession accepts streams until the session ends, then waits for
// every stream it started.
func (s *Server) serveSession(sess *session) {
	ysess := sess.Session
	start := sess.start
	sess.log.Info("session opened", "source", sess.source, "transport", sess.carrier)
	var streams sync.WaitGroup
	defer func() {
		sess.cancel()
		ysess.Close()
		streams.Wait()
		sess.log.Info("session closed", "duration", time.Since(start).Round(time.Millisecond))
	}()
	for {
		st, err := ysess.AcceptStream()
		if err != nil {
			return
		}
		// Counted from here, not from its header: a stream waiting for
		// its header holds a goroutine too.
		if n := sess.streams.Add(1); n > int64(s.cfg.MaxStreamsPerSession) {
			sess.streams.Add(-1)
			s.refuseStream(sess, st)
			continue
		}
		streams.Add(1)
		go s.serveStream(sess, st, func() {
			sess.streams.Add(-1)
			streams.Done()
		})
	}
}

// refuseStream answers a stream over MaxStreamsPerSession without reading
// its header and closes it.
func (s *Server) refuseStream(sess *session, st *mux.Stream) {
	s.metrics.limitHit("streams_per_session")
	err := mux.Refuse(mux.CodeFailed, "too many streams on this session (limit %d); close some connections", s.cfg.MaxStreamsPerSession)
	sess.log.Warn("stream refused", "stream", st.StreamID(), "err", err)
	mux.WriteReply(st, err)
	st.Close()
}

// serveStream serves one stream. release is called once the stream is
// done with: before serveStream returns, or, for a TCP stream, when its
// Splice ends.
func (s *Server) serveStream(sess *session, st *mux.Stream, release func()) {
	h, err := mux.ReadHeaderTimeout(st, s.cfg.HeaderTimeout)
	if err != nil {
		sess.log.Warn("bad stream header", "stream", st.StreamID(), "err", err)
		st.Close()
		release()
		return
	}
	if h.Kind == mux.KindTCP {
		s.serveTCP(sess, st, h, release)
		return
	}
	defer release()
	kind := h.Kind.String()
	log := sess.log.With("stream", st.StreamID(), "kind", kind, "target", h.Target)
	user := sess.user.Load()
	refuse := func(err error) {
		log.Warn("stream refused", "err", err)
		mux.WriteReply(st, err)
		st.Close()
		s.metrics.streamRefused(kind)
	}
	if h.Kind != mux.KindBind {
		s.active.Add(1)
		defer s.active.Add(-1)
	}
	switch h.Kind {
	case mux.KindUDP:
		if err := user.CheckTarget(h.Target + "/udp"); err != nil {
			refuse(err)
			return
		}
		start := time.Now()
		stats, err := udp.Serve(sess.ctx, st, s.cfg.Dialer.DialContext, h.Target, s.cfg.UDPIdle, s.cfg.DialTimeout)
		if err != nil {
			log.Warn("stream refused", "err", err)
			s.metrics.streamRefused(kind)
			return
		}
		s.metrics.streamOpened(kind)(stats.SentBytes, stats.ReceivedBytes)
		log.Info("udp flow closed", "datagrams_out", stats.Sent, "datagrams_in", stats.Received,
			"dropped", stats.Dropped, "duration", time.Since(start).Round(time.Millisecond))
	case mux.KindFile:
		if s.cfg.Files == nil {
			refuse(mux.Refuse(mux.CodeUnsupported, "file transfer is not enabled on this server; start it with --files-root DIR"))
			return
		}
		if err := mux.WriteReply(st, nil); err != nil {
			st.Close()
			return
		}
		done := s.metrics.streamOpened(kind)
		start := time.Now()
		cst := &countingStream{Stream: st}
		err := s.cfg.Files.ServeFiles(sess.ctx, sess.name, cst)
		st.Close()
		done(cst.in.Load(), cst.out.Load())
		// Each transfer is logged once, as a whole, by the file service.
		log.Debug("file stream closed", "err", err, "bytes_in", cst.in.Load(), "bytes_out", cst.out.Load(),
			"duration", time.Since(start).Round(time.Millisecond))
	case mux.KindBind:
		if err := s.serveBind(sess, st, h.Target, log); err != nil {
			refuse(err)
		}
	default:
		refuse(mux.Refuse(mux.CodeUnsupported, "stream kind %d is not supported by this server", h.Kind))
	}
}

// serveTCP dials the target of a KindTCP stream and splices the two. It
// returns once the stream is answered: the copying goes on in goroutines
// of the Splice, which call release when it ends. Idle forwards can be
// counted in thousands, so what each holds is kept small: its goroutines
// are fresh, and it keeps no logger of its own, only the values its log
// lines are built from when they are written.
func (s *Server) serveTCP(sess *session, st *mux.Stream, h mux.Header, release func()) {
	id, kind, target := st.StreamID(), h.Kind.String(), h.Target
	refused := func(err error) {
		sess.log.Warn("stream refused", "stream", id, "kind", kind, "target", target, "err", err)
		s.metrics.streamRefused(kind)
		release()
	}
	if err := sess.user.Load().CheckTarget(target); err != nil {
		mux.WriteReply(st, err)
		st.Close()
		refused(err)
		return
	}
	s.active.Add(1)
	start := time.Now()
	var done func(in, out int64)
	err := s.parking.SpliceTCP(sess.ctx, st, s.cfg.Dialer.DialContext, target, s.cfg.DialTimeout,
		func() {
			sess.log.Info("stream opened", "stream", id, "kind", kind, "target", target)
			done = s.metrics.streamOpened(kind)
		},
		func(sent, received int64) {
			done(sent, received)
			sess.log.Info("stream closed", "stream", id, "kind", kind, "target", target,
				"bytes_out", sent, "bytes_in", received, "duration", time.Since(start).Round(time.Millisecond))
			s.active.Add(-1)
			release()
		})
	if err != nil {
		s.active.Add(-1)
		refused(err)
	}
}

// bindTable records which session holds each reverse listener, so that a
// taken address can be reported with its holder, and a user reconnecting
// replaces its own stale bind.
type bindTable struct {
	mu sync.Mutex
	m  map[string]*bindLease // by "tcp:host:port" / "udp:host:port"
}

type bindLease struct {
	user, session string
	ctx           context.Context // ends when the lease is released
	release       context.CancelFunc
	done          chan struct{} // closed once the listener is closed
}

// claim registers key for sess, replacing a lease of the same user. It
// fails naming the holder when another user has it.
func (t *bindTable) claim(key, addr string, sess *session) (*bindLease, error) {
	t.mu.Lock()
	old := t.m[key]
	if old != nil && old.user != sess.name {
		t.mu.Unlock()
		return nil, mux.Refuse(mux.CodeInUse, "%s is already taken on the server by user %s (session %s); pick another port", addr, old.user, old.session)
	}
	lease := &bindLease{user: sess.name, session: sess.id, done: make(chan struct{})}
	lease.ctx, lease.release = context.WithCancel(sess.ctx)
	t.m[key] = lease
	t.mu.Unlock()
	if old != nil {
		// The same user's earlier session, not yet noticed dead: its
		// listener goes now.
		sess.log.Info("reverse listener taken over from an earlier session", "addr", addr, "old_session", old.session)
		old.release()
		<-old.done
	}
	return lease, nil
}

func (t *bindTable) drop(key string, lease *bindLease) {
	t.mu.Lock()
	if t.m[key] == lease {
		delete(t.m, key)
	}
	t.mu.Unlock()
	close(lease.done)
}

// serveBind listens on the address a reverse remote asks for and carries
// each connection (or UDP flow) back to the client, until the bind stream
// or the session ends. A returned error has not been replied yet.
func (s *Server) serveBind(sess *session, st *mux.Stream, target string, log *slog.Logger) error {
	if !s.cfg.AllowReverse {
		return mux.Refuse(mux.CodeUnsupported, "reverse remotes are disabled on this server; start it with --reverse")
	}
	mode, addr, ok := strings.Cut(target, ":")
	if !ok || (mode != "tcp" && mode != "udp" && mode != "socks") {
		return mux.Refuse(mux.CodeFailed, "bad bind request %q", target)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return mux.Refuse(mux.CodeFailed, "bad bind address %q: %v", addr, err)
	}
	network := "tcp"
	if mode == "udp" {
		network = "udp"
	}
	if err := sess.user.Load().CheckTarget(bindACL(mode, addr)); err != nil {
		return err
	}
	key := network + ":" + addr
	lease, err := s.binds.claim(key, addr, sess)
	if err != nil {
		return err
	}
	defer s.binds.drop(key, lease)

	ctx := lease.ctx
	defer lease.release()
	var (
		serve     func() error
		listener  io.Closer
		socksAuth *socks.Auth // what the client sends for a socks bind
	)
	if network == "udp" {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return bindError(addr, err)
		}
		ul := &udp.Listener{
			Conn: pc.(*net.UDPConn),
			Open: func(ctx context.Context) (net.Conn, error) {
				return mux.Open(sess.Session, mux.Header{Kind: mux.KindReverseUDP, Target: addr}, s.cfg.HeaderTimeout)
			},
			Idle:     s.cfg.UDPIdle,
			MaxFlows: s.cfg.UDPMaxFlows,
			Logger:   log,
		}
		listener = pc
		serve = func() error { return ul.Serve(ctx) }
	} else {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return bindError(addr, err)
		}
		listener = l
		serve = func() error { return s.serveReverseTCP(ctx, sess, l, addr, mode == "socks", socksAuth, log) }
	}
	// The listener is closed synchronously before the lease is dropped,
	// so that a successor of the same user can bind the address at once.
	defer listener.Close()
	stop := context.AfterFunc(ctx, func() { listener.Close() })
	defer stop()
	if err := mux.WriteReply(st, nil); err != nil {
		return nil
	}
	if mode == "socks" {
		// The client sends the credentials its SOCKS listener requires;
		// connections wait in the backlog until they are known.
		st.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
		a, err := socks.ReadBindAuth(st)
		st.SetReadDeadline(time.Time{})
		if err != nil {
			log.Warn("reverse socks bind failed", "addr", addr, "err", err)
			st.Close()
			return nil
		}
		socksAuth = a
		if a == nil {
			log.Warn("reverse socks listener without authentication: any local user of this server can use it; give the client --socks-auth", "addr", addr)
		}
	}
	log.Info("reverse listening", "addr", addr, "mode", mode)
	// The bind stream is the lease: the client never writes on it, so a
	// read returns when the client closes it or the session dies.
	go func() {
		var b [1]byte
		st.Read(b[:])
		lease.release()
	}()
	err = serve()
	lease.release()
	st.Close()
	log.Info("reverse listener closed", "addr", addr)
	if err != nil && ctx.Err() == nil {
		log.Warn("reverse listener failed", "addr", addr, "err", err)
	}
	return nil
}

// bindACL is what a bind of mode ("tcp", "udp" or "socks") on addr is
// checked as against the allow list: R:host:port, R:host:port/udp and
// R:host:port/socks. A reverse SOCKS listener is a kind of its own: it lets
// whoever reaches it on the server dial anything the client can, which an
// entry for a plain reverse port does not grant.
func bindACL(mode, addr string) string {
	switch mode {
	case "udp":
		return "R:" + addr + "/udp"
	case "socks":
		return "R:" + addr + "/socks"
	}
	return "R:" + addr
}

func bindError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return mux.Refuse(mux.CodeInUse, "%s is in use by another program on the server; pick another port", addr)
	}
	return mux.Refuse(mux.CodeFailed, "cannot listen on %s on the server: %v", addr, err)
}

// serveReverseTCP accepts connections on a reverse listener and carries
// each to the client: as a KindReverseTCP stream naming the bind, or, for
// a SOCKS bind, as a KindTCP stream to the target the SOCKS client asked
// for (which the client dials).
func (s *Server) serveReverseTCP(ctx context.Context, sess *session, l net.Listener, addr string, isSOCKS bool, auth *socks.Auth, log *slog.Logger) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go s.serveReverseConn(ctx, sess, conn, addr, isSOCKS, auth, log, wg.Done)
	}
}

// serveReverseConn carries a connection to a reverse listener back to the
// client. It returns once the stream for it is open: a Splice carries it
// on, and calls release when it ends.
func (s *Server) serveReverseConn(ctx context.Context, sess *session, conn net.Conn, addr string, isSOCKS bool, auth *socks.Auth, log *slog.Logger, release func()) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func() {
		stop()
		conn.Close()
		release()
	}
	h := mux.Header{Kind: mux.KindReverseTCP, Target: addr}
	if isSOCKS {
		conn.SetDeadline(time.Now().Add(s.cfg.HeaderTimeout))
		target, err := socks.Handshake(conn, auth)
		conn.SetDeadline(time.Time{})
		if err != nil {
			log.Warn("reverse socks request failed", "peer", conn.RemoteAddr().String(), "err", err)
			fail()
			return
		}
		h = mux.Header{Kind: mux.KindTCP, Target: target}
	}
	st, err := mux.Open(sess.Session, h, s.cfg.DialTimeout+s.cfg.HeaderTimeout)
	if isSOCKS {
		socks.Reply(conn, err)
	}
	if err != nil {
		log.Warn("reverse connection refused", "dest", h.Target, "err", err)
		fail()
		return
	}
	s.active.Add(1)
	done := s.metrics.streamOpened("reverse-tcp")
	start := time.Now()
	stop() // the splice closes conn from now on, when ctx ends
	s.parking.Splice(ctx, conn, st, func(sent, received int64) {
		done(sent, received)
		log.Info("reverse stream closed", "dest", h.Target, "bytes_out", sent, "bytes_in", received,
			"duration", time.Since(start).Round(time.Millisecond))
		s.active.Add(-1)
		release()
	})
}

// countingStream counts the bytes of a file-transfer stream for the
// metrics: in is what the client sent, out what it received.
type countingStream struct {
	*mux.Stream
	in, out atomic.Int64
}

func (c *countingStream) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingStream) Write(p []byte) (int, error) {
	n, err := c.Stream.Write(p)
	c.out.Add(int64(n))
	return n, err
}
