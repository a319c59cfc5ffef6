package server

import (
	"errors"

	"github.com/burrowtun/burrow/transfer"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the server's Prometheus instruments. Create them with
// NewMetrics on a registry the caller owns and pass them in Config; a nil
// *Metrics records nothing.
type Metrics struct {
	sessions     prometheus.Gauge
	sessionsAll  prometheus.Counter
	streams      *prometheus.CounterVec
	streamsOpen  *prometheus.GaugeVec
	bytes        *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	handshake    prometheus.Histogram
	reloads      *prometheus.CounterVec
	limits       *prometheus.CounterVec
	transfers    *prometheus.CounterVec
	xferFiles    *prometheus.CounterVec
	xferBytes    *prometheus.CounterVec
}

// NewMetrics creates the server's instruments and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "burrow_sessions", Help: "Tunnel sessions open now.",
		}),
		sessionsAll: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "burrow_sessions_total", Help: "Tunnel sessions opened.",
		}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_streams_total", Help: "Streams served, by kind and result (ok, refused).",
		}, []string{"kind", "result"}),
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "burrow_streams_open", Help: "Streams open now, by kind.",
		}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_bytes_total", Help: "Payload bytes carried, by kind and direction (in: from clients, out: to clients).",
		}, []string{"kind", "direction"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_auth_failures_total", Help: "Refused logins, by reason (credentials, missing, rate_limited).",
		}, []string{"reason"}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "burrow_handshake_seconds",
			Help:    "Time from a tunnel request to a running session (authentication and upgrade).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_reloads_total", Help: "Configuration reloads, by result (ok, failed).",
		}, []string{"result"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_limit_hits_total", Help: "Requests refused because a limit was reached, by limit.",
		}, []string{"limit"}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_transfers_total", Help: "File transfers and listings, by operation (send, fetch, list) and result (ok, failed).",
		}, []string{"op", "result"}),
		xferFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_transfer_files_total", Help: "Files committed (send) or sent (fetch), by operation.",
		}, []string{"op"}),
		xferBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "burrow_transfer_bytes_total", Help: "File data received (send) or sent (fetch), uncompressed, by operation.",
		}, []string{"op"}),
	}
	reg.MustRegister(m.sessions, m.sessionsAll, m.streams, m.streamsOpen, m.bytes, m.authFailures, m.handshake, m.reloads, m.limits,
		m.transfers, m.xferFiles, m.xferBytes)
	return m
}

// Transferred records a finished transfer or listing.
func (m *Metrics) Transferred(r transfer.Report) {
	if m == nil {
		return
	}
	result := "ok"
	if r.Err != nil {
		result = "failed"
	}
	m.transfers.WithLabelValues(r.Op, result).Inc()
	// Refusals by a limit count with the server's other limit hits.
	switch {
	case errors.Is(r.Err, transfer.ErrBusy):
		m.limitHit("transfers")
	case errors.Is(r.Err, transfer.ErrLimit):
		m.limitHit("transfer_size")
	case errors.Is(r.Err, transfer.ErrQuota):
		m.limitHit("files_quota")
	case errors.Is(r.Err, transfer.ErrNoSpace):
		m.limitHit("files_reserve")
	}
	if r.Op != "list" {
		m.xferFiles.WithLabelValues(r.Op).Add(float64(r.Files))
		m.xferBytes.WithLabelValues(r.Op).Add(float64(r.Bytes))
	}
}

func (m *Metrics) sessionOpened(seconds float64) {
	if m == nil {
		return
	}
	m.sessions.Inc()
	m.sessionsAll.Inc()
	m.handshake.Observe(seconds)
}

func (m *Metrics) sessionClosed() {
	if m != nil {
		m.sessions.Dec()
	}
}

func (m *Metrics) authFailed(reason string) {
	if m != nil {
		m.authFailures.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) streamRefused(kind string) {
	if m != nil {
		m.streams.WithLabelValues(kind, "refused").Inc()
	}
}

// streamOpened counts a served stream and returns the function that
// records its end and the bytes it carried.
func (m *Metrics) streamOpened(kind string) func(in, out int64) {
	if m == nil {
		return func(int64, int64) {}
	}
	m.streams.WithLabelValues(kind, "ok").Inc()
	open := m.streamsOpen.WithLabelValues(kind)
	open.Inc()
	return func(in, out int64) {
		open.Dec()
		m.bytes.WithLabelValues(kind, "in").Add(float64(in))
		m.bytes.WithLabelValues(kind, "out").Add(float64(out))
	}
}

// Reloaded counts a configuration reload; the caller (which re-reads the
// files) reports the result.
func (m *Metrics) Reloaded(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("failed").Inc()
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
}

func (m *Metrics) limitHit(limit string) {
	if m != nil {
		m.limits.WithLabelValues(limit).Inc()
	}
}
