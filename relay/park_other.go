//go:build !linux

package relay

// poller would park directions reading sockets; this platform has none,
// so they wait on goroutines of their own.
type poller struct{}

func newPoller() (*poller, error) { return nil, nil }

func (p *poller) close() error { return nil }

func (p *poller) parker(src any) parker { return nil }

func (p *poller) count() int { return 0 }
