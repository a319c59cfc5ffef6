package server

// authHolder lets an Authenticator, an interface, sit in an atomic.Pointer.
type authHolder struct{ Authenticator }

// lookuper is implemented by authenticators that can look a user up by
// name (*Users does), which SetAuth needs to re-check live sessions.
type lookuper interface {
	Lookup(name string) *User
}

// Lookup returns the named user, or nil.
func (us *Users) Lookup(name string) *User { return us.users[name] }

// SetAuth replaces the authenticator, as on a reload of the users file.
// Live sessions are checked against it: a session whose user is gone, or
// whose password changed, is closed; the others keep running and their
// new streams follow the user's new allow list. It returns how many
// sessions were closed.
func (s *Server) SetAuth(a Authenticator) int {
	s.auth.Store(&authHolder{a})
	lu, ok := a.(lookuper)
	if !ok {
		return 0
	}
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	closed := 0
	for _, sess := range sessions {
		old := sess.user.Load()
		fresh := lu.Lookup(sess.name)
		switch {
		case fresh == nil:
			sess.log.Warn("closing session: user removed from the users file")
		case fresh.hash != old.hash:
			sess.log.Warn("closing session: the user's password changed")
		default:
			sess.user.Store(fresh)
			continue
		}
		sess.Close()
		closed++
	}
	return closed
}
