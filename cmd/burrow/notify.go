package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/burrowtun/burrow/daemon"
	sd "github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells systemd (Type=notify) where the service is: READY once
// the listener accepts, RELOADING/READY around a reload, STOPPING on the
// way out, and WATCHDOG pings when the unit sets WatchdogSec. Outside
// systemd (no NOTIFY_SOCKET) every call does nothing.
type notifier struct{ log *slog.Logger }

var _ daemon.Notifier = notifier{}

func (n notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notification failed", "state", state, "err", err)
	}
}

func (n notifier) Ready()    { n.send(sd.SdNotifyReady) }
func (n notifier) Stopping() { n.send(sd.SdNotifyStopping) }

// Reloading sends RELOADING=1 with the monotonic timestamp that
// Type=notify-reload units require.
func (n notifier) Reloading() {
	usec, ok := monotonicUsec()
	if !ok {
		n.send(sd.SdNotifyReloading)
		return
	}
	n.send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sd.SdNotifyReloading, usec))
}

// Watchdog pings systemd at half the unit's WatchdogSec until ctx ends.
func (n notifier) Watchdog(ctx context.Context) {
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			n.send(sd.SdNotifyWatchdog)
		case <-ctx.Done():
			return
		}
	}
}
