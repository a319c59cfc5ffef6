package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells systemd (Type=notify) where the service is: READY once
// the listener accepts, RELOADING/READY around a reload, STOPPING on the
// way out, and WATCHDOG pings when the unit sets WatchdogSec. Outside
// systemd (no NOTIFY_SOCKET) every call does nothing.
type notifier struct{ log *slog.Logger }

func (n notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notification failed", "state", state, "err", err)
	}
}

func (n notifier) ready()    { n.send(daemon.SdNotifyReady) }
func (n notifier) stopping() { n.send(daemon.SdNotifyStopping) }

// reloading sends RELOADING=1 with the monotonic timestamp that
// Type=notify-reload units require.
func (n notifier) reloading() {
	usec, ok := monotonicUsec()
	if !ok {
		n.send(daemon.SdNotifyReloading)
		return
	}
	n.send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, usec))
}

// watchdog pings systemd at half the unit's WatchdogSec until ctx ends.
func (n notifier) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			n.send(daemon.SdNotifyWatchdog)
		case <-ctx.Done():
			return
		}
	}
}
