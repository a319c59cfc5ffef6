package transfer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"time"
)

// Endpoint is what one user may do with files on the server.
type Endpoint struct {
	// User names the owner. A data stream can only join a transfer that
	// a stream of the same User (and Root) started.
	User string
	// Root is the directory every path of this user is relative to;
	// nothing outside it is ever read or written.
	Root string
	// Read allows fetch and ls; Write allows send.
	Read, Write bool
	// MaxBytes and MaxFiles, when positive, bound the total size of the
	// regular files and the number of entries under Root; a send that
	// would pass them is refused before any data moves.
	MaxBytes, MaxFiles int64
	// Reserve is the free space a send must leave on Root's filesystem.
	// Zero means DefaultReserve; negative means no free-space check.
	Reserve int64
}

// errorWriteTimeout bounds the wait to deliver a final error frame.
const errorWriteTimeout = 5 * time.Second

// DefaultBufferBudget is the default ServerConfig.MaxBufferBytes.
const DefaultBufferBudget = 1 << 30

// DefaultReserve is the free space a receiver leaves by default.
const DefaultReserve = 64 << 20

// ServerConfig configures a Server. The zero value serves no one through
// ServeFiles (Lookup is nil) but ServeStream works with defaults.
type ServerConfig struct {
	// Lookup maps an authenticated user to their Endpoint, for
	// ServeFiles. An error refuses the stream with its text.
	Lookup func(user string) (Endpoint, error)
	// Limits bound what a client may ask; zero fields mean defaults.
	Limits Limits
	// MaxTransfers bounds the transfers (send or fetch) in progress at
	// once, over all users; MaxTransfersPerUser, those of one user.
	// Defaults 64 and 8.
	MaxTransfers, MaxTransfersPerUser int
	// MaxBufferBytes bounds the memory the data streams of all
	// transfers may hold together, counted as two chunks per stream; the
	// transfers of one user may hold half of it. A transfer is granted
	// the streams that fit, at least one, or is refused as busy. Default
	// DefaultBufferBudget.
	MaxBufferBytes int64
	// Statfs reports the bytes available to the server on the
	// filesystem holding dir; nil means the operating system's
	// (unavailable on some platforms, where the check is skipped).
	Statfs func(dir string) (avail int64, err error)

	// Report, if set, is called when a listing or the control stream of
	// a send or fetch ends, for logs and metrics.
	Report func(Report)

	wrap func(name string, f partFile) partFile // tests: wrap partial files
}

// Report describes a finished transfer as the server saw it.
type Report struct {
	User string
	// Op is "send" (the client pushed files), "fetch" or "list".
	Op string
	// Files counts the files committed (send) or sent (fetch); Bytes the
	// file data received or sent, uncompressed, resumed data excluded.
	Files, Bytes int64
	Duration     time.Duration
	Err          error // nil when the transfer completed
}

// Server serves the file-transfer streams of every user and session. A
// transfer spans several streams (a control stream and data streams),
// which find each other through the Server; it holds no other state and
// forgets a transfer when its control stream ends.
type Server struct {
	cfg ServerConfig

	mu        sync.Mutex
	transfers map[transferID]*transfer
	perUser   map[string]int
	busy      map[string]*transfer // destination files being written, by root and path: who writes them
	buffers   int64                // bytes the admitted transfers' streams may hold
	userBufs  map[string]int64     // the same, by user
	books     map[string]*quotaBook
	space     spaceBook // what receiving transfers may still write
}

// NewServer returns a Server; cfg is copied.
func NewServer(cfg ServerConfig) *Server {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 64
	}
	if cfg.MaxTransfersPerUser <= 0 {
		cfg.MaxTransfersPerUser = 8
	}
	if cfg.MaxBufferBytes <= 0 {
		cfg.MaxBufferBytes = DefaultBufferBudget
	}
	if cfg.Statfs == nil {
		cfg.Statfs = statfs
	}
	return &Server{cfg: cfg, transfers: make(map[transferID]*transfer), perUser: make(map[string]int), busy: make(map[string]*transfer),
		userBufs: make(map[string]int64), books: make(map[string]*quotaBook)}
}

// transfer is the state that a control stream shares with its data
// streams.
type transfer struct {
	id      transferID
	owner   string
	ctx     context.Context
	cancel  context.CancelFunc
	ready   chan struct{} // closed once data may flow
	recv    *receiver     // push
	send    *sender       // pull
	cs      int
	comp    bool
	streams chan struct{} // data stream slots
	buffers int64         // what the slots count for in Server.buffers
	wg      sync.WaitGroup
	closing bool
}

func owner(ep *Endpoint) string { return ep.User + "\x00" + ep.Root }

// ServeFiles serves one stream of user's session, looking the user up
// with cfg.Lookup. It implements the server package's FileService.
func (s *Server) ServeFiles(ctx context.Context, user string, rw io.ReadWriteCloser) error {
	if s.cfg.Lookup == nil {
		err := fmt.Errorf("%w: file transfer has no users configured", ErrPermission)
		refuse(ctx, rw, s.cfg.Limits.IdleTimeout, err)
		return err
	}
	ep, err := s.cfg.Lookup(user)
	if err != nil {
		refuse(ctx, rw, s.cfg.Limits.IdleTimeout, err)
		return err
	}
	if ep.User == "" {
		ep.User = user
	}
	return s.ServeStream(ctx, ep, rw)
}

// refuse answers a stream's Hello with an error.
func refuse(ctx context.Context, rw io.ReadWriteCloser, timeout time.Duration, err error) {
	c := newConn(ctx, rw, timeout)
	defer c.close()
	if _, rerr := c.expect(frameHello); rerr == nil {
		c.sendError(err)
	}
}

// ServeStream serves one stream opened by a client for ep: a listing, the
// control stream of a send or fetch, or one of its data streams. It
// returns when the stream's work is done, with the error it reported to
// the client, if any. It does not close rw; the caller does, after it
// returns.
func (s *Server) ServeStream(ctx context.Context, ep Endpoint, rw io.ReadWriteCloser) (err error) {
	lim := &s.cfg.Limits
	c := newConn(ctx, rw, lim.IdleTimeout)
	defer c.close()
	p, err := c.expect(frameHello)
	if err != nil {
		return err
	}
	h, err := decodeHello(p, lim)
	if err != nil {
		c.sendError(err)
		return err
	}
	rep := Report{User: ep.User}
	start := time.Now()
	switch h.op {
	case opList:
		rep.Op = "list"
		err = s.serveList(c, &ep, h)
	case opPush:
		rep.Op = "send"
		err = s.servePush(ctx, c, &ep, h, &rep)
	case opPull:
		rep.Op = "fetch"
		err = s.servePull(ctx, c, &ep, h, &rep)
	case opData:
		err = s.serveData(ctx, c, &ep, h)
	}
	if rep.Op != "" && s.cfg.Report != nil {
		rep.Duration, rep.Err = time.Since(start), err
		s.cfg.Report(rep)
	}
	var re *RemoteError
	if err != nil && ctx.Err() == nil && !errors.As(err, &re) {
		// Errors the client reported are not echoed back. The client may
		// not be reading (it may be writing a manifest we refused): do
		// not wait long for it.
		c.wtimeout = min(c.wtimeout, errorWriteTimeout)
		c.sendError(err)
	}
	return err
}

// openRoot opens ep's files root. The error names the user, not the
// directory: it is sent to the client.
func openRoot(ep *Endpoint) (*os.Root, error) {
	root, err := os.OpenRoot(ep.Root)
	if err != nil {
		return nil, fmt.Errorf("the files root of user %s cannot be opened: %w; the server's administrator must create it or fix its permissions", ep.User, bare(err))
	}
	return root, nil
}

// checkOptions validates a push or pull request's settings.
func (s *Server) checkOptions(h *hello) error {
	lim := &s.cfg.Limits
	if h.chunkSize < MinChunkSize || int64(h.chunkSize) > int64(lim.MaxChunkSize) {
		return fmt.Errorf("%w: chunk size %d; this server accepts %d to %d", ErrLimit, h.chunkSize, MinChunkSize, lim.MaxChunkSize)
	}
	if h.flags&^(flagCompress|flagStream) != 0 {
		return protoErr("unknown request flags %#x", h.flags)
	}
	return nil
}

// admit counts a new transfer against the limits and registers it.
func (s *Server) admit(ctx context.Context, ep *Endpoint, h *hello) (*transfer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.transfers) >= s.cfg.MaxTransfers {
		return nil, fmt.Errorf("%w: the server is busy with %d transfers; try again later", ErrBusy, len(s.transfers))
	}
	if s.perUser[ep.User] >= s.cfg.MaxTransfersPerUser {
		return nil, fmt.Errorf("%w: user %s already has %d transfers in progress; wait for one to finish", ErrBusy, ep.User, s.perUser[ep.User])
	}
	// A data stream holds two chunk-sized buffers at most: grant the
	// streams that fit in what is left of the budget, and of the user's
	// half of it, so that one user's transfers cannot take it all.
	per := 2 * int64(h.chunkSize)
	userLeft := max(s.cfg.MaxBufferBytes/2, per) - s.userBufs[ep.User]
	n := min(int64(max(int(h.streams), 1)), int64(s.cfg.Limits.MaxStreams), (s.cfg.MaxBufferBytes-s.buffers)/per)
	if n >= 1 && userLeft/per < 1 {
		return nil, fmt.Errorf("%w: user %s's transfers in progress hold their share of the server's transfer memory; wait for one to finish, or use a smaller chunk size", ErrBusy, ep.User)
	}
	n = min(n, userLeft/per)
	if n < 1 {
		return nil, fmt.Errorf("%w: the server's transfers hold all the memory it gives them; try again later, or with a smaller chunk size", ErrBusy)
	}
	t := &transfer{owner: owner(ep), ready: make(chan struct{}), cs: int(h.chunkSize), comp: h.flags&flagCompress != 0}
	rand.Read(t.id[:])
	t.ctx, t.cancel = context.WithCancel(ctx)
	t.streams = make(chan struct{}, n)
	t.buffers = n * per
	s.buffers += t.buffers
	s.userBufs[ep.User] += t.buffers
	s.transfers[t.id] = t
	s.perUser[ep.User]++
	return t, nil
}

// retire ends a transfer: its data streams are cancelled and waited for.
func (s *Server) retire(t *transfer, ep *Endpoint) {
	s.mu.Lock()
	t.closing = true
	delete(s.transfers, t.id)
	s.buffers -= t.buffers
	if s.userBufs[ep.User] -= t.buffers; s.userBufs[ep.User] <= 0 {
		delete(s.userBufs, ep.User)
	}
	if s.perUser[ep.User]--; s.perUser[ep.User] <= 0 {
		delete(s.perUser, ep.User)
	}
	s.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// book returns the quota book of the transfers under root, or nil when
// ep has no quota. Books are kept for the life of the Server: there is
// one per root with a quota.
func (s *Server) book(ep *Endpoint) *quotaBook {
	if ep.MaxBytes <= 0 && ep.MaxFiles <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.books[ep.Root]
	if b == nil {
		b = &quotaBook{}
		s.books[ep.Root] = b
	}
	return b
}

// busyWait bounds the wait for a destination file that another
// transfer in progress is writing.
const busyWait = 5 * time.Second

// lockPaths reserves destination files against concurrent transfers. A
// transfer that was just interrupted may still be winding down when its
// rerun arrives: one whose control stream has ended (its context is done)
// is committing what it received, and is waited for, however long its
// fsyncs take, within the stall timeout; the rerun then plans against
// what it left. A transfer still in progress is waited for a few seconds
// (its client may have gone without the server seeing it yet), then the
// path is reported busy.
func (s *Server) lockPaths(t *transfer, root string) func([]string) (*heldPaths, error) {
	return func(paths []string) (*heldPaths, error) {
		start := time.Now()
		for {
			held, holder, busy := s.tryLock(t, root, paths)
			if held != nil {
				return held, nil
			}
			limit := busyWait
			if holder.ctx.Err() != nil {
				limit = s.cfg.Limits.StallTimeout
			}
			if time.Since(start) >= limit {
				return nil, fmt.Errorf("%w: another transfer is writing %s; wait for it to finish", ErrBusy, busy)
			}
			select {
			case <-t.ctx.Done():
				return nil, t.ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// tryLock reserves paths under root for t, all or none. When one is held
// it returns the transfer holding it and its name.
func (s *Server) tryLock(t *transfer, root string, paths []string) (*heldPaths, *transfer, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, len(paths))
	for i, p := range paths {
		keys[i] = root + "\x00" + p
		if holder := s.busy[keys[i]]; holder != nil && holder != t {
			return nil, holder, p
		}
	}
	for _, k := range keys {
		s.busy[k] = t
	}
	return &heldPaths{s: s, t: t, root: root, keys: keys}, nil, ""
}

// heldPaths are the destination files a transfer holds against others.
type heldPaths struct {
	s    *Server
	t    *transfer
	root string
	keys []string
}

// keep releases the held paths not in paths (under the same root).
func (h *heldPaths) keep(paths []string) {
	want := make(map[string]bool, len(paths))
	for _, p := range paths {
		want[h.root+"\x00"+p] = true
	}
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	kept := h.keys[:0]
	for _, k := range h.keys {
		if want[k] {
			kept = append(kept, k)
		} else if h.s.busy[k] == h.t {
			delete(h.s.busy, k)
		}
	}
	h.keys = kept
}

// release releases every held path.
func (h *heldPaths) release() { h.keep(nil) }

func (s *Server) servePush(ctx context.Context, c *conn, ep *Endpoint, h *hello, rep *Report) error {
	if !ep.Write {
		return fmt.Errorf("%w: user %s may not write files on this server", ErrPermission, ep.User)
	}
	if err := s.checkOptions(h); err != nil {
		return err
	}
	dest, err := cleanRemote(h.dest)
	if err != nil {
		return err
	}
	t, err := s.admit(ctx, ep, h)
	if err != nil {
		return err
	}
	defer s.retire(t, ep)
	root, err := openRoot(ep)
	if err != nil {
		return err
	}
	defer root.Close()
	c.maxChunk = t.cs
	lim := s.cfg.Limits
	reserve := ep.Reserve
	if reserve == 0 {
		reserve = DefaultReserve
	}
	cfg := recvConfig{
		root: root, dest: dest, overwrite: h.overwrite, links: h.links, chunkSize: t.cs,
		stream: h.flags&flagStream != 0, limits: lim, reserve: reserve,
		quotaBytes: ep.MaxBytes, quotaFiles: ep.MaxFiles, book: s.book(ep), space: &s.space,
		lock: s.lockPaths(t, ep.Root), wrap: s.cfg.wrap,
	}
	if reserve > 0 {
		cfg.statfs = s.cfg.Statfs
	}
	r := newReceiver(cfg)
	defer r.close()
	defer func() { rep.Files, rep.Bytes = r.committed.Load(), r.dataBytes.Load() }()
	// The data streams write through r: on every way out they stop
	// before it closes (retire, deferred earlier, would run after). Then
	// what they completed is committed, even if the client has gone: the
	// paths stay reserved until r closes, so a rerun waits for this.
	defer func() {
		t.cancel()
		t.wg.Wait()
		r.salvage()
	}()
	if r.entries, err = readManifest(c, &lim, nil); err != nil {
		return err
	}
	stop := c.keepalive(lim.IdleTimeout / 4)
	recs, err := r.plan(t.ctx)
	stop()
	if err != nil {
		return err
	}
	t.recv = r
	close(t.ready)
	if err := writePlan(c, recs, &planEnd{id: t.id, streams: uint16(cap(t.streams))}); err != nil {
		return err
	}
	if err := waitDone(c, func() int64 { return r.dataBytes.Load() + r.committed.Load() }, lim.StallTimeout); err != nil {
		return err
	}
	// The client saw every data stream end; a stream still open now is
	// not the honest client's.
	t.cancel()
	t.wg.Wait()
	stop = c.keepalive(lim.IdleTimeout / 4)
	err = r.finish()
	stop()
	if err != nil {
		return err
	}
	return c.send(frameEnd, nil)
}

func (s *Server) servePull(ctx context.Context, c *conn, ep *Endpoint, h *hello, rep *Report) error {
	if !ep.Read {
		return fmt.Errorf("%w: user %s may not read files on this server", ErrPermission, ep.User)
	}
	if err := s.checkOptions(h); err != nil {
		return err
	}
	if len(h.paths) == 0 {
		return protoErr("a fetch names no paths")
	}
	stream := h.flags&flagStream != 0
	if stream && len(h.paths) != 1 {
		return protoErr("a fetch to a writer names one file")
	}
	t, err := s.admit(ctx, ep, h)
	if err != nil {
		return err
	}
	defer s.retire(t, ep)
	root, err := openRoot(ep)
	if err != nil {
		return err
	}
	defer root.Close()
	lim := s.cfg.Limits
	w := &walker{fsys: rootFS{root}, links: h.links, limit: lim.MaxEntries}
	for _, p := range h.paths {
		name, err := cleanRemote(p)
		if err != nil {
			return err
		}
		if name == "" {
			return fmt.Errorf("%w: fetch names the whole root; name files or directories under it", ErrUnsafePath)
		}
		if err := w.add(name, path.Base(name)); err != nil {
			return err
		}
	}
	if h.links == LinksKeep {
		w.dropOutsideLinks()
	}
	if err := dupCheck(w.entries); err != nil {
		return err
	}
	if stream && (len(w.entries) != 1 || w.entries[0].Type != TypeFile) {
		return fmt.Errorf("%w: %s is not a regular file; only a file can be fetched to standard output", ErrUnsafePath, h.paths[0])
	}
	for i := range w.entries {
		if e := &w.entries[i]; e.Type == TypeFile && chunkCount(e.Size, t.cs) > maxChunksPerFile {
			return fmt.Errorf("%w: %s is too large for %d-byte chunks; use a larger chunk size", ErrLimit, e.Path, t.cs)
		}
	}
	names := w.names
	t.send = newSender(w.entries, t.cs, func(i int) (source, error) { return root.Open(names[i]) })
	defer func() { rep.Files, rep.Bytes = t.send.ended.Load(), t.send.dataBytes.Load() }()
	err = c.writeWhile(func() error {
		return writeManifest(c, w.entries, &manifestEnd{count: uint64(len(w.entries)), id: t.id, streams: uint16(cap(t.streams))})
	}, func() (err error) {
		_, _, err = readPlan(c, t.send.addPlan)
		return err
	})
	if err != nil {
		return err
	}
	t.send.sortPlan()
	close(t.ready)
	if err := waitDone(c, func() int64 { return t.send.dataBytes.Load() + t.send.ended.Load() }, lim.StallTimeout); err != nil {
		return err
	}
	t.cancel()
	t.wg.Wait()
	return c.send(frameEnd, nil)
}

// waitDone reads the control stream until the client's Done; the client
// sends keepalives meanwhile. A transfer whose progress (file data and
// files done, as progress counts them) stands still for stall ends with
// an error sent to the client: keepalives alone do not hold it open.
func waitDone(c *conn, progress func() int64, stall time.Duration) error {
	done := make(chan error, 1)
	go func() {
		_, err := c.expect(frameDone)
		done <- err
	}()
	tick := time.NewTicker(max(stall/8, time.Millisecond))
	defer tick.Stop()
	last, moved := progress(), time.Now()
	for {
		select {
		case err := <-done:
			return err
		case now := <-tick.C:
			if p := progress(); p != last {
				last, moved = p, now
				continue
			}
			if now.Sub(moved) < stall {
				continue
			}
			err := fmt.Errorf("%w: the transfer moved no file data for %v; the server ended it (partial files are kept: run the command again)", ErrTimeout, stall)
			c.sendError(err)
			c.abort()
			<-done
			return err
		}
	}
}

// serveData serves a data stream of a transfer started on another stream.
func (s *Server) serveData(ctx context.Context, c *conn, ep *Endpoint, h *hello) error {
	s.mu.Lock()
	t := s.transfers[h.id]
	if t == nil || t.owner != owner(ep) || t.closing {
		s.mu.Unlock()
		return fmt.Errorf("%w: no such transfer in progress (it ended, or timed out); run the command again", ErrNotFound)
	}
	select {
	case t.streams <- struct{}{}:
	default:
		s.mu.Unlock()
		return fmt.Errorf("%w: more than %d data streams for one transfer", ErrLimit, cap(t.streams))
	}
	t.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		<-t.streams
		t.wg.Done()
	}()
	defer c.endWith(t.ctx)()
	select {
	case <-t.ready:
	case <-t.ctx.Done():
		return fmt.Errorf("%w: the transfer ended before this stream could join it", ErrNotFound)
	case <-ctx.Done():
		return ctx.Err()
	}
	c.maxChunk = t.cs
	b := newStreamBufs(t.cs, t.comp, s.cfg.Limits.IdleTimeout)
	defer b.close()
	if t.recv != nil {
		return serveRecvData(c, b, t.recv)
	}
	return serveSendData(c, b, t.send)
}

// serveRecvData reads a push's data stream: chunks and file ends, each
// committed file acknowledged, until End.
func serveRecvData(c *conn, b *streamBufs, r *receiver) error {
	for {
		typ, p, err := c.recv()
		if err != nil {
			return err
		}
		file, status := -1, byte(0)
		switch typ {
		case frameChunk:
			file, status, err = recvChunk(b, r, p)
		case frameFileEnd:
			file, status, err = recvEnd(r, p)
		case frameEnd:
			// Every file that ended on this stream is committed before
			// its End: flush the batch of small files it may be in.
			if err := flushAcks(c, r, true); err != nil {
				return err
			}
			return c.send(frameEnd, nil)
		default:
			err = protoErr("unexpected frame type %d on a data stream", typ)
		}
		if err != nil {
			return err
		}
		if file >= 0 {
			if err := c.send(frameCommitted, func(e *enc) { encodeCommitted(e, uint32(file), status) }); err != nil {
				return err
			}
		}
		if err := flushAcks(c, r, false); err != nil {
			return err
		}
	}
}

// flushAcks commits the receiver's batch of small files, when it is full
// or always, and acknowledges them on c (any data stream of the transfer
// will do: the client counts commits, not where they arrive).
func flushAcks(c *conn, r *receiver, always bool) error {
	if !always && !r.batchFull() {
		return nil
	}
	done, err := r.flush()
	for _, file := range done {
		if serr := c.send(frameCommitted, func(e *enc) { encodeCommitted(e, uint32(file), committedWritten) }); serr != nil {
			return serr
		}
	}
	return err
}

// serveSendData answers a pull's data stream: the chunks each Want asks
// for, then WantDone, until End.
func serveSendData(c *conn, b *streamBufs, s *sender) error {
	var spans []span
	for {
		typ, p, err := c.recv()
		if err != nil {
			return err
		}
		switch typ {
		case frameWant:
			if spans, err = decodeWant(spans[:0], p); err != nil {
				return err
			}
			for _, sp := range spans {
				if err := s.checkSpan(sp); err != nil {
					return err
				}
				if err := s.sendSpan(c, b, sp); err != nil {
					return err
				}
			}
			if err := c.send(frameWantDone, nil); err != nil {
				return err
			}
		case frameEnd:
			return c.send(frameEnd, nil)
		default:
			return protoErr("unexpected frame type %d on a data stream", typ)
		}
	}
}
