package transfer

import (
	"fmt"
	"os"
	"path"
)

func (s *Server) serveList(c *conn, ep *Endpoint, h *hello) error {
	if !ep.Read {
		return fmt.Errorf("%w: user %s may not read files on this server", ErrPermission, ep.User)
	}
	name, err := cleanRemote(h.dest)
	if err != nil {
		return err
	}
	root, err := openRoot(ep)
	if err != nil {
		return err
	}
	defer root.Close()
	return list(c, root, name, s.cfg.Limits.MaxEntries)
}

// list sends the entries of a directory (or the one entry of a file) as
// Entries frames, then End.
func list(c *conn, root *os.Root, name string, limit int) error {
	dir := name
	if dir == "" {
		dir = "."
	}
	fi, err := root.Lstat(dir)
	if err != nil {
		return srcErr(name, err)
	}
	var e enc
	flush := func() error {
		if len(e.b) == 0 {
			return nil
		}
		err := c.send(frameEntries, func(x *enc) { x.raw(e.b) })
		e.b = e.b[:0]
		return err
	}
	add := func(p, full string, fi os.FileInfo) error {
		x := listEntry(p, fi)
		if x.Type == TypeSymlink {
			x.Target, _ = root.Readlink(full)
		}
		encodeEntry(&e, &x)
		if len(e.b) >= batchBytes {
			return flush()
		}
		return nil
	}
	if !fi.IsDir() {
		if err := add(path.Base(dir), dir, fi); err != nil {
			return err
		}
		if err := flush(); err != nil {
			return err
		}
		return c.send(frameEnd, nil)
	}
	d, err := root.Open(dir)
	if err != nil {
		return srcErr(name, err)
	}
	defer d.Close()
	n := 0
	for {
		batch, err := d.ReadDir(256)
		for _, k := range batch {
			if n++; n > limit {
				return fmt.Errorf("%w: %s holds more than %d entries", ErrLimit, name, limit)
			}
			fi, err := k.Info()
			if err != nil {
				continue
			}
			if err := add(k.Name(), path.Join(dir, k.Name()), fi); err != nil {
				return err
			}
		}
		if err != nil || len(batch) == 0 {
			break
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return c.send(frameEnd, nil)
}

func listEntry(name string, fi os.FileInfo) Entry {
	x := Entry{Path: name, Mode: fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky), ModTime: fi.ModTime()}
	switch {
	case fi.Mode().IsRegular():
		x.Type, x.Size = TypeFile, fi.Size()
	case fi.IsDir():
		x.Type = TypeDir
	case fi.Mode()&os.ModeSymlink != 0:
		x.Type = TypeSymlink
	default:
		x.Type = TypeOther
	}
	return x
}
