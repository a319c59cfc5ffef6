package server

import "fmt"

// admit checks the session limits for a new session of user and reserves
// its place until unreserve, so that concurrent logins cannot together
// exceed a limit while their upgrades are in flight.
func (s *Server) admit(user string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions)+s.reservedTotal >= s.cfg.MaxSessions {
		s.metrics.limitHit("sessions")
		return fmt.Errorf("the server has its maximum of %d sessions; retry later", s.cfg.MaxSessions)
	}
	n := s.reserved[user]
	for sess := range s.sessions {
		if sess.name == user {
			n++
		}
	}
	if n >= s.cfg.MaxSessionsPerUser {
		s.metrics.limitHit("sessions_per_user")
		return fmt.Errorf("user %s has its maximum of %d sessions; close one first", user, s.cfg.MaxSessionsPerUser)
	}
	s.reserved[user]++
	s.reservedTotal++
	return nil
}

// unreserve gives back the place admit reserved, once the session is
// tracked or has failed to start.
func (s *Server) unreserve(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserved[user]--; s.reserved[user] <= 0 {
		delete(s.reserved, user)
	}
	s.reservedTotal--
}
