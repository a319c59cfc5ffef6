package daemon

import (
	"errors"
	"time"

	"github.com/burrowtun/burrow/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// certExpiryWarning is how long before expiry the certificate is
// reported at every check.
const certExpiryWarning = 14 * 24 * time.Hour

// metrics are what the admin listener's /metrics serves: the Go runtime
// and process, the server's, and the certificate's expiry.
type metrics struct {
	reg        *prometheus.Registry
	server     *server.Metrics
	certExpiry prometheus.Gauge
}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{reg: reg, server: server.NewMetrics(reg)}
	m.certExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "burrow_certificate_expiry_timestamp_seconds", Help: "When the served certificate expires (Unix time).",
	})
	reg.MustRegister(m.certExpiry)
	return m
}

// checkCert sets the expiry gauge from the certificate served now, and
// warns when it expires soon.
func (p *process) checkCert() {
	if p.tls.files == nil {
		return // ACME renews by itself
	}
	leaf := p.tls.files.Leaf()
	p.metrics.certExpiry.Set(float64(leaf.NotAfter.Unix()))
	if left := time.Until(leaf.NotAfter); left < certExpiryWarning {
		p.log.Warn("the TLS certificate expires soon; renew it", "not_after", leaf.NotAfter.UTC(), "left", left.Round(time.Hour))
	}
}

// reload reads the users file and the certificate again. What fails to
// load keeps its previous value; sessions of users who lost their entry
// are closed.
func (p *process) reload() {
	p.cfg.Notify.Reloading()
	defer p.cfg.Notify.Ready()
	var errs []error
	if fresh, err := server.LoadUsers(p.cfg.AuthFile); err != nil {
		errs = append(errs, err)
	} else {
		p.users.Store(fresh)
		closed := p.srv.SetAuth(fresh)
		p.log.Info("users reloaded", "users", fresh.Len(), "sessions_closed", closed)
	}
	if p.tls.files != nil {
		if err := p.tls.files.Reload(); err != nil {
			errs = append(errs, err)
		} else {
			p.log.Info("certificate reloaded", "fingerprint", p.tls.fingerprint(), "not_after", p.tls.files.Leaf().NotAfter.UTC())
			p.checkCert()
		}
	}
	err := errors.Join(errs...)
	p.metrics.server.Reloaded(err)
	if err != nil {
		p.log.Error("reload failed; keeping the previous configuration where it failed", "err", err)
	}
}

// pollCert reloads the certificate when its files' stamp differs from
// the one given, and returns the current stamp.
func (p *process) pollCert(certStamp string) string {
	if stamp := fileStamp(p.tls.certFile, p.tls.keyFile); p.tls.files != nil && stamp != certStamp {
		certStamp = stamp
		if err := p.tls.files.Reload(); err != nil {
			p.log.Error("certificate files changed but do not load; keeping the previous one", "err", err)
		} else {
			p.log.Info("certificate files changed; reloaded", "fingerprint", p.tls.fingerprint())
		}
	}
	p.checkCert()
	return certStamp
}
