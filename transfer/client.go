package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Client runs transfers against a Server. Its fields are read when a
// method starts; zero values mean defaults. A Client may run several
// transfers at once.
type Client struct {
	// Open opens a new stream to the server's file-transfer endpoint
	// (over Burrow, a yamux stream of kind "file"). Required.
	Open func(ctx context.Context) (io.ReadWriteCloser, error)
	// Parallel is the number of data streams of a transfer. Default 4;
	// the server may allow fewer.
	Parallel int
	// ChunkSize is the unit of hashing, resuming and sending. Default
	// 4 MiB, at least MinChunkSize; a send raises it for a file that
	// would have more than about a million chunks.
	ChunkSize int
	// Compress sends chunks zstd-compressed when that makes them
	// smaller; incompressible chunks go as they are.
	Compress bool
	// Overwrite applies to files that exist at the destination.
	Overwrite Overwrite
	// Links applies to symbolic links inside the directories sent.
	Links LinkPolicy
	// Progress, if set, receives Events. Calls are serialized and should
	// return quickly.
	Progress func(Event)
	// Limits bound what the server can make the client accept in a
	// fetch or a listing.
	Limits Limits
	// Reserve is the free space a fetch leaves on the local disk: zero
	// means DefaultReserve, negative no check.
	Reserve int64
	// Statfs reports the bytes available on the filesystem holding dir;
	// nil means the operating system's.
	Statfs func(dir string) (avail int64, err error)

	wrap func(name string, f partFile) partFile // tests
}

// config returns a copy of c with defaults filled in.
func (c *Client) config() (Client, error) {
	cfg := *c
	if cfg.Open == nil {
		return cfg, errors.New("transfer: Client.Open is not set")
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	cfg.ChunkSize = max(cfg.ChunkSize, MinChunkSize)
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.Parallel = min(cfg.Parallel, cfg.Limits.MaxStreams)
	if cfg.Reserve == 0 {
		cfg.Reserve = DefaultReserve
	}
	if cfg.Statfs == nil {
		cfg.Statfs = statfs
	}
	return cfg, nil
}

func (c *Client) hello(op byte) *hello {
	h := &hello{op: op, overwrite: c.Overwrite, links: c.Links, chunkSize: uint32(c.ChunkSize), streams: uint16(c.Parallel)}
	if c.Compress {
		h.flags |= flagCompress
	}
	return h
}

// dial opens a stream and sends its Hello.
func (c *Client) dial(ctx context.Context, h *hello) (*conn, error) {
	rw, err := c.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening a file stream: %w", err)
	}
	cn := newConn(ctx, rw, c.Limits.IdleTimeout)
	if err := cn.send(frameHello, func(e *enc) { encodeHello(e, h) }); err != nil {
		cn.close()
		return nil, err
	}
	return cn, nil
}

// Send copies local files and directories (with everything under them)
// into remoteDir on the server, which is created if needed. Each source
// lands under its base name. Rerunning an interrupted Send resumes it.
func (c *Client) Send(ctx context.Context, localPaths []string, remoteDir string) (Stats, error) {
	start := time.Now()
	cfg, err := c.config()
	if err != nil {
		return Stats{}, err
	}
	tr := newTracker(cfg.Progress, nil)
	w := &walker{fsys: localFS{}, links: cfg.Links, limit: cfg.Limits.MaxEntries, skipped: tr.skippedPath}
	for _, p := range localPaths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return Stats{}, err
		}
		if err := w.add(p, filepath.Base(abs)); err != nil {
			return Stats{}, err
		}
	}
	if cfg.Links == LinksKeep {
		w.dropOutsideLinks()
	}
	if err := dupCheck(w.entries); err != nil {
		return Stats{}, err
	}
	var largest int64
	for i := range w.entries {
		largest = max(largest, w.entries[i].Size)
	}
	if need := (largest + maxChunksPerFile - 1) / maxChunksPerFile; need > int64(cfg.ChunkSize) {
		cfg.ChunkSize = int((need + MinChunkSize - 1) / MinChunkSize * MinChunkSize)
	}
	names := w.names
	snd := newSender(w.entries, cfg.ChunkSize, func(i int) (source, error) { return os.Open(names[i]) })
	h := cfg.hello(opPush)
	h.dest = remoteDir
	err = cfg.push(ctx, h, snd, tr, nil)
	return tr.result(start), err
}

// SendStream stores what r yields as the file remotePath on the server:
// one file of unknown length, hashed chunk by chunk and committed
// atomically, but not resumable.
func (c *Client) SendStream(ctx context.Context, r io.Reader, remotePath string) (Stats, error) {
	start := time.Now()
	cfg, err := c.config()
	if err != nil {
		return Stats{}, err
	}
	name, err := cleanRemote(remotePath)
	if err != nil {
		return Stats{}, err
	}
	if name == "" {
		return Stats{}, fmt.Errorf("%w: %q names no file", ErrUnsafePath, remotePath)
	}
	entries := []Entry{{Path: path.Base(name), Type: TypeFile, Size: -1, Mode: 0o644, ModTime: time.Now()}}
	tr := newTracker(cfg.Progress, entries)
	snd := newSender(entries, cfg.ChunkSize, nil)
	h := cfg.hello(opPush)
	h.flags |= flagStream
	h.streams = 1
	h.dest = path.Dir(name)
	err = cfg.push(ctx, h, snd, tr, r)
	return tr.result(start), err
}

// push runs a send: manifest, plan, data streams, Done.
func (c *Client) push(ctx context.Context, h *hello, snd *sender, tr *tracker, stream io.Reader) error {
	snd.track = tr
	tr.entries = snd.entries
	cc, err := c.dial(ctx, h)
	if err != nil {
		return err
	}
	defer cc.close()
	var pe planEnd
	err = cc.writeWhile(func() error {
		return writeManifest(cc, snd.entries, &manifestEnd{count: uint64(len(snd.entries))})
	}, func() (err error) {
		_, pe, err = readPlan(cc, snd.addPlan)
		return err
	})
	if err != nil {
		return c.fail(ctx, cc, err)
	}
	snd.sortPlan()
	var (
		files int
		bytes int64
	)
	for i := range snd.entries {
		if snd.wanted(i) {
			files++
			bytes += max(snd.entries[i].Size, 0)
		}
	}
	tr.plan(files, bytes)
	for i := range snd.entries {
		if r := snd.plan[uint32(i)]; r != nil && r.action == planSkip {
			tr.skipped(i, skipReason(r.reason), false)
		}
	}
	units := makeUnits(snd.entries, snd.wanted, snd.cs, stream != nil)
	workers := min(c.Parallel, max(int(pe.streams), 1), len(units))
	stop := cc.keepalive(c.Limits.IdleTimeout / 4)
	err = runWorkers(ctx, workers, func(ctx context.Context) error {
		return c.pushWorker(ctx, pe.id, h.flags&flagCompress != 0, units, snd, tr, stream)
	})
	stop()
	if err != nil {
		return c.fail(ctx, cc, err)
	}
	if err := cc.send(frameDone, nil); err != nil {
		return c.fail(ctx, cc, err)
	}
	if _, err := cc.expect(frameEnd); err != nil {
		return c.fail(ctx, cc, err)
	}
	dirs, links := 0, 0
	for i := range snd.entries {
		switch snd.entries[i].Type {
		case TypeDir:
			dirs++
		case TypeSymlink:
			links++
		}
	}
	tr.count(dirs, links)
	return nil
}

// fail returns the error to report: the context's when it was cancelled.
// Local errors are reported to the server before the stream closes.
func (c *Client) fail(ctx context.Context, cc *conn, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var re *RemoteError
	if !errors.As(err, &re) && !errors.Is(err, ErrTimeout) {
		cc.wtimeout = min(cc.wtimeout, errorWriteTimeout)
		cc.sendError(err)
	}
	return err
}

func (c *Client) pushWorker(ctx context.Context, id transferID, compress bool, units <-chan []span, snd *sender, tr *tracker, stream io.Reader) error {
	cn, err := c.dial(ctx, &hello{op: opData, id: id})
	if err != nil {
		return err
	}
	defer cn.close()
	cn.setReadTimeout(0) // acknowledgements come only as files commit
	acks := make(chan error, 1)
	go func() {
		err := readAcks(cn, snd.entries, tr)
		if err != nil {
			// The server gave up on this stream (a full disk, say) and no
			// longer reads it: unblock the chunk writer below.
			cn.abort()
		}
		acks <- err
	}()
	b := newStreamBufs(snd.cs, compress, c.Limits.IdleTimeout)
	defer b.close()
	err = func() error {
		if stream != nil {
			return snd.sendStream(cn, b, stream)
		}
		for u := range units {
			for _, sp := range u {
				if err := snd.sendSpan(cn, b, sp); err != nil {
					return err
				}
			}
		}
		return nil
	}()
	if err == nil {
		err = cn.send(frameEnd, nil)
	}
	if err != nil {
		cn.abort()
		if aerr := <-acks; errors.As(aerr, new(*RemoteError)) {
			return aerr // the server's reason for failing our writes
		}
		return err
	}
	t := time.NewTimer(c.Limits.IdleTimeout)
	defer t.Stop()
	select {
	case err = <-acks:
		return err
	case <-t.C:
		cn.abort()
		<-acks
		return fmt.Errorf("%w: the server did not finish a data stream within %v", ErrTimeout, c.Limits.IdleTimeout)
	}
}

// readAcks reads a push data stream's replies until End.
func readAcks(cn *conn, entries []Entry, tr *tracker) error {
	for {
		typ, p, err := cn.recv()
		if err != nil {
			return err
		}
		switch typ {
		case frameCommitted:
			file, status, err := decodeCommitted(p)
			if err != nil {
				return err
			}
			if int64(file) >= int64(len(entries)) {
				return protoErr("commit of entry %d", file)
			}
			if status == committedSkipped {
				tr.skipped(int(file), "identical at the destination (same hash)", true)
			} else {
				tr.fileDone(int(file), entries[file].Size)
			}
		case frameEnd:
			return nil
		default:
			return protoErr("unexpected frame type %d on a data stream", typ)
		}
	}
}

// makeUnits splits the files that need work into units of about a chunk:
// one chunk of a large file, or a batch of small files, so that streams
// share the work evenly and small files cost no round trip each.
func makeUnits(entries []Entry, wanted func(int) bool, cs int, stream bool) chan []span {
	if stream {
		ch := make(chan []span, 1)
		ch <- nil
		close(ch)
		return ch
	}
	var (
		units [][]span
		cur   []span
		bytes int64
	)
	flush := func() {
		if len(cur) > 0 {
			units = append(units, cur)
			cur, bytes = nil, 0
		}
	}
	for i := range entries {
		if !wanted(i) {
			continue
		}
		size := entries[i].Size
		n := chunkCount(size, cs)
		if size <= int64(cs) {
			cur = append(cur, span{file: uint32(i), count: uint32(n)})
			if bytes += size + 512; bytes >= int64(cs) || len(cur) >= maxWantSpans {
				flush()
			}
			continue
		}
		for c := range n {
			units = append(units, []span{{file: uint32(i), first: uint32(c), count: 1}})
		}
	}
	flush()
	ch := make(chan []span, len(units))
	for _, u := range units {
		ch <- u
	}
	close(ch)
	return ch
}

// runWorkers runs n workers and returns the first error; the others are
// cancelled then.
func runWorkers(ctx context.Context, n int, work func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range n {
		wg.Go(func() {
			if err := work(ctx); err != nil {
				once.Do(func() {
					first = err
					cancel()
				})
			}
		})
	}
	wg.Wait()
	return first
}

// Fetch copies remote files and directories into localDir, which is
// created if needed. Each lands under its base name. Rerunning an
// interrupted Fetch resumes it.
func (c *Client) Fetch(ctx context.Context, remotePaths []string, localDir string) (Stats, error) {
	start := time.Now()
	cfg, err := c.config()
	if err != nil {
		return Stats{}, err
	}
	if err := os.MkdirAll(localDir, 0o755); err != nil {
		return Stats{}, err
	}
	root, err := os.OpenRoot(localDir)
	if err != nil {
		return Stats{}, err
	}
	defer root.Close()
	h := cfg.hello(opPull)
	h.paths = remotePaths
	cc, err := cfg.dial(ctx, h)
	if err != nil {
		return Stats{}, err
	}
	defer cc.close()
	var me manifestEnd
	entries, err := readManifest(cc, &cfg.Limits, &me)
	if err != nil {
		return Stats{}, cfg.fail(ctx, cc, err)
	}
	if err := checkRequested(entries, remotePaths); err != nil {
		return Stats{}, cfg.fail(ctx, cc, err)
	}
	tr := newTracker(cfg.Progress, entries)
	rcfg := recvConfig{
		root: root, overwrite: cfg.Overwrite, links: cfg.Links, chunkSize: cfg.ChunkSize,
		limits: cfg.Limits, reserve: cfg.Reserve, track: tr, wrap: cfg.wrap,
	}
	if cfg.Reserve > 0 {
		rcfg.statfs = cfg.Statfs
	}
	r := newReceiver(rcfg)
	defer r.close()
	r.entries = entries
	stop := cc.keepalive(cfg.Limits.IdleTimeout / 4)
	recs, err := r.plan(ctx)
	stop()
	if err != nil {
		return tr.result(start), cfg.fail(ctx, cc, err)
	}
	if err := writePlan(cc, recs, &planEnd{}); err != nil {
		return tr.result(start), cfg.fail(ctx, cc, cc.reason(err))
	}
	units := makeUnits(entries, func(i int) bool { return r.files[i] != nil }, cfg.ChunkSize, false)
	if err := cfg.pull(ctx, cc, me, units, r, h.flags&flagCompress != 0); err != nil {
		// Interrupted, or the server went away: commit what is complete
		// and verified, so that even the last file of a fetch stopped
		// after its last chunk needs nothing more.
		r.salvage()
		return tr.result(start), err
	}
	err = r.finish()
	return tr.result(start), err
}

// checkRequested refuses entries the client did not ask for: a server
// must not choose what lands in the local directory (scp's
// CVE-2019-6111).
func checkRequested(entries []Entry, requested []string) error {
	allowed := make(map[string]bool, len(requested))
	for _, p := range requested {
		if q, err := cleanRemote(p); err == nil && q != "" {
			allowed[path.Base(q)] = true
		}
	}
	for i := range entries {
		top, _, _ := strings.Cut(entries[i].Path, "/")
		if !allowed[top] {
			return &UnsafePathError{Path: entries[i].Path, Reason: "the server sent it, but it was not asked for"}
		}
	}
	return nil
}

// pull runs a fetch's data streams, then Done.
func (c *Client) pull(ctx context.Context, cc *conn, me manifestEnd, units chan []span, s sink, compress bool) error {
	workers := min(c.Parallel, max(int(me.streams), 1), len(units))
	stop := cc.keepalive(c.Limits.IdleTimeout / 4)
	err := runWorkers(ctx, workers, func(ctx context.Context) error {
		return c.pullWorker(ctx, me.id, units, s)
	})
	stop()
	if err == nil {
		err = cc.send(frameDone, nil)
	}
	if err == nil {
		_, err = cc.expect(frameEnd)
	}
	if err != nil {
		return c.fail(ctx, cc, err)
	}
	return nil
}

// pullWorker asks for units on one data stream, keeping two Wants in
// flight so that the server never waits for the next one. Wants go out
// from their own goroutine: a transport without buffering (net.Pipe)
// would otherwise deadlock, each side writing to the other.
func (c *Client) pullWorker(ctx context.Context, id transferID, units <-chan []span, s sink) error {
	cn, err := c.dial(ctx, &hello{op: opData, id: id})
	if err != nil {
		return err
	}
	defer cn.close()
	cn.maxChunk = c.ChunkSize
	b := newStreamBufs(c.ChunkSize, false, 0)
	defer b.close()
	const window = 2
	var (
		credit = make(chan struct{}, window)
		quit   = make(chan struct{})
		werr   = make(chan error, 1)
	)
	go func() {
		werr <- func() error {
			for sent := 0; ; sent++ {
				if sent >= window {
					select {
					case <-credit:
					case <-quit:
						return nil
					}
				}
				u, ok := <-units
				if !ok {
					return cn.send(frameEnd, nil)
				}
				if err := cn.send(frameWant, func(e *enc) { encodeWant(e, u) }); err != nil {
					return err
				}
			}
		}()
	}()
	err = func() error {
		for {
			typ, p, err := cn.recv()
			if err != nil {
				return err
			}
			switch typ {
			case frameChunk:
				_, _, err = recvChunk(b, s, p)
			case frameFileEnd:
				_, _, err = recvEnd(s, p)
			case frameWantDone:
				select {
				case credit <- struct{}{}:
				default:
					err = protoErr("more WantDone frames than Wants")
				}
			case frameEnd:
				return nil
			default:
				err = protoErr("unexpected frame type %d on a data stream", typ)
			}
			if err != nil {
				return err
			}
		}
	}()
	close(quit)
	if err != nil {
		cn.abort()
		<-werr
		return err
	}
	return <-werr
}

// FetchStream writes the remote file remotePath to w, each chunk verified
// before it is written and the whole file's hash checked at the end; an
// error after some data was written leaves w with that partial data.
func (c *Client) FetchStream(ctx context.Context, remotePath string, w io.Writer) (Stats, error) {
	start := time.Now()
	cfg, err := c.config()
	if err != nil {
		return Stats{}, err
	}
	h := cfg.hello(opPull)
	h.flags |= flagStream
	h.paths = []string{remotePath}
	cc, err := cfg.dial(ctx, h)
	if err != nil {
		return Stats{}, err
	}
	defer cc.close()
	var me manifestEnd
	entries, err := readManifest(cc, &cfg.Limits, &me)
	if err == nil && (len(entries) != 1 || entries[0].Type != TypeFile || entries[0].Size < 0) {
		err = protoErr("a fetch to a writer got %d entries", len(entries))
	}
	if err == nil && chunkCount(entries[0].Size, cfg.ChunkSize) > maxChunksPerFile {
		err = fmt.Errorf("%w: %s is too large for %d-byte chunks", ErrLimit, entries[0].Path, cfg.ChunkSize)
	}
	if err != nil {
		return Stats{}, cfg.fail(ctx, cc, err)
	}
	tr := newTracker(cfg.Progress, entries)
	tr.plan(1, entries[0].Size)
	if err := writePlan(cc, nil, &planEnd{}); err != nil {
		return tr.result(start), cfg.fail(ctx, cc, err)
	}
	ws := &writerSink{w: w, e: &entries[0], cs: cfg.ChunkSize, n: chunkCount(entries[0].Size, cfg.ChunkSize), track: tr}
	// One stream, spans in order: the chunks arrive in file order.
	n := ws.n
	units := make(chan []span, n/maxWantChunks+1)
	for first := int64(0); first < n || first == 0; first += maxWantChunks {
		units <- []span{{file: 0, first: uint32(first), count: uint32(min(maxWantChunks, n-first))}}
	}
	close(units)
	cfg.Parallel = 1
	me.streams = 1
	if err := cfg.pull(ctx, cc, me, units, ws, false); err != nil {
		return tr.result(start), err
	}
	if !ws.done {
		return tr.result(start), fmt.Errorf("%w: the server ended the stream early", ErrIncomplete)
	}
	return tr.result(start), nil
}

// writerSink receives one file in order and writes it to w.
type writerSink struct {
	w      io.Writer
	e      *Entry
	cs     int
	n      int64
	hashes []hash
	done   bool
	track  *tracker
}

func (s *writerSink) expect(h *chunkHeader) (string, error) {
	if h.file != 0 || int64(h.index) != int64(len(s.hashes)) || int64(h.index) >= s.n {
		return "", protoErr("chunk %d of entry %d out of order", h.index, h.file)
	}
	if int(h.size) != chunkLen(s.e.Size, s.cs, int64(h.index)) {
		return "", fmt.Errorf("%w: chunk %d of %q is %d bytes, expected %d", ErrIntegrity, h.index, s.e.Path, h.size, chunkLen(s.e.Size, s.cs, int64(h.index)))
	}
	return s.e.Path, nil
}

func (s *writerSink) write(h *chunkHeader, data []byte, wire int) (int, byte, error) {
	if len(s.hashes) == 0 {
		s.track.start(0, 0)
	}
	if _, err := s.w.Write(data); err != nil {
		return -1, 0, fmt.Errorf("writing the output: %w", err)
	}
	s.hashes = append(s.hashes, h.hash)
	s.track.progress(0, int64(len(data)), int64(wire), false)
	return -1, 0, nil
}

func (s *writerSink) end(fe *fileEnd) (int, byte, error) {
	if fe.file != 0 || s.done || int64(len(s.hashes)) != s.n || int64(fe.size) != s.e.Size {
		return -1, 0, fmt.Errorf("%w: the file ended at chunk %d of %d", ErrIntegrity, len(s.hashes), s.n)
	}
	if rootHash(s.e.Size, s.cs, s.hashes) != fe.root {
		return -1, 0, fmt.Errorf("%w: whole-file hash of %s does not match the server's", ErrIntegrity, s.e.Path)
	}
	s.done = true
	s.track.fileDone(0, s.e.Size)
	return -1, 0, nil
}

// List returns the entries of a remote directory (or the one entry of a
// remote file), with paths relative to it.
func (c *Client) List(ctx context.Context, remotePath string) ([]Entry, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	h := &hello{op: opList, dest: remotePath}
	cc, err := cfg.dial(ctx, h)
	if err != nil {
		return nil, err
	}
	defer cc.close()
	var out []Entry
	for {
		typ, p, err := cc.recv()
		if err != nil {
			return nil, cfg.fail(ctx, cc, err)
		}
		switch typ {
		case frameEntries:
			if out, err = decodeEntries(out, p, &cfg.Limits, true); err != nil {
				return nil, cfg.fail(ctx, cc, err)
			}
		case frameEnd:
			return out, nil
		default:
			return nil, cfg.fail(ctx, cc, protoErr("unexpected frame type %d in a listing", typ))
		}
	}
}
