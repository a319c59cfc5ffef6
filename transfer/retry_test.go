package transfer

import (
	"context"
	"fmt"
	"io"
	"testing"
)

func TestResumable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{io.ErrUnexpectedEOF, true},
		{context.DeadlineExceeded, true},
		{ErrNoSpace, true},
		{ErrIntegrity, true},
		{ErrTimeout, true},
		{ErrBusy, true},
		{ErrIncomplete, true},
		{ErrConflict, false},
		{ErrPermission, false},
		{ErrUnsafePath, false},
		{ErrNotFound, false},
		{ErrLimit, false},
		{ErrQuota, false},
		{ErrProtocol, false},
		{fmt.Errorf("inbox/a: %w", ErrQuota), false},
		{fmt.Errorf("connection lost: %w", io.EOF), true},
	}
	for _, tt := range tests {
		if got := Resumable(tt.err); got != tt.want {
			t.Errorf("Resumable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
