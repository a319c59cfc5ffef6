package httpconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// DialOptions configures Dial. Zero fields mean the defaults.
type DialOptions struct {
	// HTTPClient makes the requests. Default http.DefaultClient. The
	// connection's requests run in parallel: two or three at a time.
	HTTPClient *http.Client
	// Header is sent with the opening request (credentials, say); a Host
	// entry, or Host, replaces the Host header of every request.
	Header http.Header
	Host   string
	// Protocol is sent in ProtocolHeader: the wire version of what runs
	// on the connection.
	Protocol string
	// Probe is the least time a stream's marks are waited for; the wait
	// grows with the time the opening exchange took. Default 2s.
	Probe time.Duration
	// Window is how many bytes the connection holds in each direction.
	// Default DefaultWindow.
	Window int
}

// ResponseError is a refused opening request. Its body is unread: the
// caller reads and closes it.
type ResponseError struct {
	Response *http.Response
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("the server answered the opening request with HTTP %d", e.Response.StatusCode)
}

// BufferedError is a stream whose marks did not arrive in time: a party
// on the way holds the body of the request or of the response named by
// Direction ("up" or "down") instead of passing it on. Polling passes.
type BufferedError struct {
	Direction string
	Waited    time.Duration // how long the mark was waited for
	Exchange  time.Duration // how long the opening exchange took
}

func (e *BufferedError) Error() string {
	what := "the response"
	if e.Direction == "up" {
		what = "the request"
	}
	return fmt.Sprintf("a proxy on the way holds streamed bodies: %s's first bytes did not arrive in %s, while a whole exchange took %s",
		what, e.Waited.Round(time.Millisecond), e.Exchange.Round(time.Millisecond))
}

// Dial opens a connection of the given mode to the server at url, and
// returns it with the headers of the server's answer to the opening
// request. A stream is returned only once both its directions are seen to
// flow.
func Dial(ctx context.Context, url string, mode Mode, opts *DialOptions) (net.Conn, http.Header, error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Probe <= 0 {
		o.Probe = 2 * time.Second
	}
	if o.Host == "" {
		o.Host = o.Header.Get("Host")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, http.NoBody)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range o.Header {
		if k != "Host" {
			req.Header[k] = v
		}
	}
	req.Host = o.Host
	req.Header.Set(TransportHeader, string(mode))
	req.Header.Set(ProtocolHeader, o.Protocol)
	start := time.Now()
	resp, err := o.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	exchange := time.Since(start)
	id := resp.Header.Get(SessionHeader)
	if resp.StatusCode != http.StatusOK || id == "" {
		return nil, nil, &ResponseError{Response: resp}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	hold := seconds(resp.Header.Get(HoldHeader), DefaultHold)
	expiry := seconds(resp.Header.Get(ExpiryHeader), DefaultExpiry)
	t := &transport{
		hc: o.HTTPClient, url: url, host: o.Host, id: id,
		hold: hold, expiry: expiry,
		conn: newConn(o.Window, addr(""), addr(req.URL.Host)),
	}
	t.ctx, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	t.onClose, t.onFail = t.closing, t.cancel
	if mode == Poll {
		t.startPoll()
		return t, resp.Header, nil
	}
	if err := t.startStream(ctx, o.Probe+4*exchange, exchange); err != nil {
		t.cancel()
		t.wg.Wait()
		return nil, nil, err
	}
	return t, resp.Header, nil
}

func seconds(s string, def time.Duration) time.Duration {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return def
	}
	return time.Duration(n) * time.Second
}

// transport is the client end of a connection.
type transport struct {
	*conn
	hc           *http.Client
	url, host    string
	id           string
	hold, expiry time.Duration
	ctx          context.Context // the connection's requests; cancelled when it is done
	cancel       context.CancelFunc
	wg           sync.WaitGroup

	// poll state, under conn.mu
	inflight      int       // polls out
	listening     int       // polls out that carry no bytes, waiting for the server's
	sending       bool      // a poll carrying bytes is out
	retryAt       time.Time // after a failed poll: when the next may go
	rewind        bool      // a response was lost: ask for the server's bytes again
	flowing       bool      // the last response brought bytes: keep two polls out
	finSent       bool      // the last poll, with CloseHeader, is out or answered
	finDone       bool      // the last poll is answered
	closeFailures int       // polls failed since Close
	early         []segment // answers that came before those they follow
	earlyBytes    int       // their bytes
	promised      int       // room for answers given to the polls out
	lastHeard     time.Time // when an exchange last succeeded
}

func (t *transport) request(ctx context.Context, body []byte) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	req.Host = t.host
	req.Header.Set(SessionHeader, t.id)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Cache-Control", "no-store")
	return req
}

// closing runs on Close: the transport delivers what is written, then
// ends, or gives up after a while.
func (t *transport) closing() {
	timer := time.AfterFunc(5*time.Second, t.cancel)
	go func() {
		t.wg.Wait()
		timer.Stop()
		t.cancel()
	}()
}

// startPoll starts the poll loop.
func (t *transport) startPoll() {
	t.lastHeard = time.Now()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		t.pollLoop()
	}()
}

// pollLoop sends each poll when it is due, on a goroutine of its own:
// one with the client's bytes, while up to two others wait, held, for
// the server's.
func (t *transport) pollLoop() {
	backoff := 50 * time.Millisecond
	defer t.cancel() // the polls still held
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		for !t.due() {
			if t.over() {
				return
			}
			if !t.retryAt.IsZero() {
				t.waitUntil(t.ctx, t.retryAt)
				if time.Now().After(t.retryAt) {
					t.retryAt = time.Time{}
				}
			} else {
				t.wait(t.ctx)
			}
			if t.ctx.Err() != nil {
				return
			}
		}
		from := t.sent
		var data []byte
		if !t.sending {
			data = t.pending(nil, MaxBody)
		}
		if len(data) > 0 {
			t.sending = true
			t.sent += int64(len(data))
		} else {
			t.listening++
		}
		room := max(0, min(MaxBody, t.free()))
		t.promised += room
		ack, rewind := t.inEnd, t.rewind
		t.rewind = false
		fin := t.closed && t.sent == t.outEnd()
		if fin {
			t.finSent = true
		}
		t.inflight++
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			err := t.exchange(from, data, ack, room, rewind, fin)
			t.mu.Lock()
			defer t.mu.Unlock()
			t.inflight--
			t.promised -= room
			if len(data) > 0 {
				t.sending = false
			} else {
				t.listening--
			}
			defer t.broadcast()
			if err == nil {
				t.lastHeard = time.Now()
				backoff = 50 * time.Millisecond
				t.finDone = t.finDone || fin
				return
			}
			// Lost: the bytes go again, the server's are asked for
			// again, after a pause that grows while polls keep failing.
			t.sent, t.rewind = t.outBase, true
			if fin {
				t.finSent = false
			}
			t.retryAt = time.Now().Add(backoff)
			backoff = min(2*backoff, 2*time.Second)
			if t.closed {
				// Closing: a few quick tries to say the rest, then it
				// goes unsaid.
				t.closeFailures++
				t.retryAt = time.Now().Add(50 * time.Millisecond)
			}
			switch {
			case errors.Is(err, ErrGone):
				t.failLocked(ErrGone)
			case t.closeFailures > 8:
				t.failLocked(net.ErrClosed)
			case time.Since(t.lastHeard) > t.expiry:
				t.failLocked(fmt.Errorf("%w (no answer for %s: %v)", ErrExpired, t.expiry, err))
			}
		}()
	}
}

// over reports whether the poll loop is done. Called with mu held.
func (t *transport) over() bool {
	return t.err != nil || t.finDone || t.ctx.Err() != nil
}

// due reports whether a poll should go now: one with bytes, if there are
// bytes to send and none is out; one to hear the server, if none is out,
// or a second while the server's bytes flow; the last one once closed.
// After a failure, nothing goes until retryAt. Called with mu held.
func (t *transport) due() bool {
	if t.err != nil || !t.retryAt.IsZero() && time.Now().Before(t.retryAt) || t.ctx.Err() != nil {
		return false
	}
	unsent := t.sent < t.outEnd()
	if t.closed {
		return !t.sending && (unsent || !t.finSent)
	}
	if unsent && !t.sending {
		return true
	}
	limit := 1
	if t.flowing {
		limit = 2
	}
	return t.free() >= minRoom && t.listening < limit
}

// free is the room for the server's bytes beside those read, those come
// early and those the polls out may bring. Called with mu held.
func (t *transport) free() int {
	return t.window - t.in.n - t.earlyBytes - t.promised
}

// exchange sends one poll and takes its answer.
func (t *transport) exchange(from int64, data []byte, ack int64, room int, rewind, fin bool) error {
	ctx, cancel := context.WithTimeout(t.ctx, t.hold+20*time.Second)
	defer cancel()
	req := t.request(ctx, data)
	req.Header.Set(UpHeader, strconv.FormatInt(from, 10))
	req.Header.Set(AckHeader, strconv.FormatInt(ack, 10))
	req.Header.Set(RoomHeader, strconv.Itoa(room))
	if rewind {
		req.Header.Set(RewindHeader, "1")
	}
	if fin {
		req.Header.Set(CloseHeader, "1")
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	down, err1 := offset(resp.Header.Get(DownHeader))
	received, err2 := offset(resp.Header.Get(ReceivedHeader))
	switch {
	case resp.StatusCode == http.StatusNotFound && resp.Header.Get(DownHeader) == "":
		return ErrGone
	case resp.StatusCode != http.StatusOK || err1 != nil || err2 != nil || resp.Header.Get(ReceivedHeader) == "":
		return fmt.Errorf("poll answered with HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return err
	}
	if len(body) > MaxBody {
		return errors.New("poll answer too large")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ack(received)
	if len(data) > 0 && received < from+int64(len(data)) {
		t.sent = max(t.outBase, min(t.sent, received)) // not all taken: send the rest again
	}
	last := resp.Header.Get(CloseHeader) != ""
	if len(body) > 0 || last {
		t.early = append(t.early, segment{down, body, last})
		t.earlyBytes += len(body)
	}
	t.join()
	// An answer that came before the one it follows waits for it (in the
	// room the window keeps for answers), while another poll is out that
	// may bring it; else it went missing (a proxy answered one of two
	// copies of a poll, say): ask again.
	if len(t.early) > 0 && t.inflight <= 1 {
		t.early, t.earlyBytes, t.rewind = nil, 0, true
	}
	t.flowing = len(body) > 0
	t.broadcast()
	return nil
}

// segment is an answer's bytes, from offset off; fin if they end the
// server's bytes.
type segment struct {
	off  int64
	data []byte
	fin  bool
}

// join takes the answers that now follow what the connection has.
// Called with mu held.
func (t *transport) join() {
	for progress := true; progress; {
		progress = false
		for i, sg := range t.early {
			if sg.off > t.inEnd {
				continue
			}
			end := sg.off + int64(len(sg.data))
			t.take(sg.off, sg.data)
			switch {
			case t.inEnd < end:
				t.rewind = true // the window took only part: the rest comes again
			case sg.fin && t.inEnd == end:
				t.inEOF = true
			}
			t.early = append(t.early[:i], t.early[i+1:]...)
			t.earlyBytes -= len(sg.data)
			progress = true
			break
		}
	}
}

// startStream opens the two streams and waits for their marks, each
// within probe.
func (t *transport) startStream(ctx context.Context, probe, exchange time.Duration) error {
	downReq := t.request(t.ctx, nil)
	downReq.Body, downReq.GetBody = http.NoBody, nil
	downReq.Header.Set(StreamHeader, "down")
	type result struct {
		resp *http.Response
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := t.hc.Do(downReq)
		got <- result{resp, err}
	}()
	timer := time.NewTimer(probe)
	defer timer.Stop()
	buffered := func(dir string) error {
		return &BufferedError{Direction: dir, Waited: probe, Exchange: exchange}
	}
	var down *http.Response
	select {
	case r := <-got:
		if r.err != nil {
			return r.err
		}
		down = r.resp
	case <-timer.C:
		t.cancel()
		return buffered("down")
	case <-ctx.Done():
		t.cancel()
		return ctx.Err()
	}
	if down.StatusCode != http.StatusOK {
		down.Body.Close()
		return fmt.Errorf("the down stream was answered with HTTP %d", down.StatusCode)
	}
	marks := make(chan error, 2)
	go func() {
		var b [1]byte
		for _, want := range []byte{markOpen, markReady} {
			if _, err := io.ReadFull(down.Body, b[:]); err != nil {
				marks <- err
				return
			}
			if b[0] != want {
				marks <- errors.New("the down stream did not start with its mark")
				return
			}
			marks <- nil
		}
	}()
	await := func(dir string) error {
		select {
		case err := <-marks:
			return err
		case <-timer.C:
			t.cancel()
			return buffered(dir)
		case <-ctx.Done():
			t.cancel()
			return ctx.Err()
		}
	}
	if err := await("down"); err != nil {
		down.Body.Close()
		return err
	}
	pr, pw := io.Pipe()
	upReq := t.request(t.ctx, nil)
	upReq.Body, upReq.GetBody = pr, nil
	upReq.ContentLength = -1
	upReq.Header.Set(StreamHeader, "up")
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		resp, err := t.hc.Do(upReq)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("the up stream was answered with HTTP %d", resp.StatusCode)
			}
		}
		if err == nil {
			err = errors.New("the up stream ended")
		}
		pr.CloseWithError(err)
		t.fail(err)
	}()
	wrote := make(chan error, 1)
	go func() {
		_, err := pw.Write([]byte{markOpen})
		wrote <- err
	}()
	if err := await("up"); err != nil {
		pw.CloseWithError(err)
		down.Body.Close()
		return err
	}
	if err := <-wrote; err != nil {
		down.Body.Close()
		return err
	}
	var both sync.WaitGroup
	both.Add(2)
	t.wg.Add(3)
	go func() {
		defer t.wg.Done()
		defer both.Done()
		t.readDown(down.Body)
	}()
	go func() {
		defer t.wg.Done()
		defer both.Done()
		t.writeUp(pw)
	}()
	go func() {
		defer t.wg.Done()
		both.Wait()
		t.cancel() // the up request, if the server has not answered it
	}()
	return nil
}

// readDown takes the server's bytes from the down stream.
func (t *transport) readDown(body io.ReadCloser) {
	defer body.Close()
	buf := make([]byte, 32<<10)
	for {
		t.mu.Lock()
		for t.in.n >= t.window && !t.over() && t.wait(t.ctx) {
		}
		room := t.window - t.in.n
		stop := t.err != nil || t.ctx.Err() != nil
		t.mu.Unlock()
		if stop {
			return
		}
		n, err := body.Read(buf[:min(len(buf), room)])
		t.mu.Lock()
		t.take(t.inEnd, buf[:n])
		switch {
		case errors.Is(err, io.EOF):
			t.inEOF = true
			t.broadcast()
		case err != nil:
			t.failLocked(fmt.Errorf("the down stream was cut: %w", err))
		}
		t.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// writeUp sends the client's bytes on the up stream, and ends it once the
// connection is closed and all is sent.
func (t *transport) writeUp(pw *io.PipeWriter) {
	buf := make([]byte, 32<<10)
	for {
		t.mu.Lock()
		for t.sent == t.outEnd() && !t.closed && t.err == nil && t.wait(t.ctx) {
		}
		data := t.pending(buf, len(buf))
		stop := t.err != nil || t.ctx.Err() != nil
		t.mu.Unlock()
		if stop {
			pw.CloseWithError(net.ErrClosed)
			return
		}
		if len(data) == 0 {
			pw.Close() // closed, and all sent
			return
		}
		if _, err := pw.Write(data); err != nil {
			t.fail(fmt.Errorf("the up stream was cut: %w", err))
			return
		}
		t.mu.Lock()
		t.sent += int64(len(data))
		t.ack(t.sent)
		t.mu.Unlock()
	}
}
