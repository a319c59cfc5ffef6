package transfer

// readManifest reads Entries frames up to ManifestEnd, checking every
// entry as it comes and the count at the end.
func readManifest(c *conn, lim *Limits, end *manifestEnd) ([]Entry, error) {
	var entries []Entry
	for {
		typ, p, err := c.recv()
		if err != nil {
			return nil, err
		}
		switch typ {
		case frameEntries:
			if entries, err = decodeEntries(entries, p, lim, false); err != nil {
				return nil, err
			}
		case frameManifestEnd:
			m, err := decodeManifestEnd(p)
			if err != nil {
				return nil, err
			}
			if m.count != uint64(len(entries)) {
				return nil, protoErr("manifest ends claiming %d entries after %d", m.count, len(entries))
			}
			if end != nil {
				*end = m
			}
			return entries, nil
		default:
			return nil, protoErr("unexpected frame type %d in a manifest", typ)
		}
	}
}

func writeManifest(c *conn, entries []Entry, end *manifestEnd) error {
	var e enc
	for i := range entries {
		encodeEntry(&e, &entries[i])
		if len(e.b) >= batchBytes || i == len(entries)-1 {
			if err := c.send(frameEntries, func(x *enc) { x.raw(e.b) }); err != nil {
				return err
			}
			e.b = e.b[:0]
		}
	}
	return c.send(frameManifestEnd, func(x *enc) { encodeManifestEnd(x, end) })
}

// writePlan sends plan records in batches; a long list of resumed chunks
// is split over several records for the same file.
func writePlan(c *conn, recs []planRec, end *planEnd) error {
	var e enc
	const maxHave = 8192
	for i := range recs {
		r := recs[i]
		for {
			part := r
			if len(part.have) > maxHave {
				part.have = part.have[:maxHave]
			}
			encodePlanRec(&e, &part)
			if len(e.b) >= batchBytes {
				if err := c.send(framePlan, func(x *enc) { x.raw(e.b) }); err != nil {
					return err
				}
				e.b = e.b[:0]
			}
			if len(r.have) <= maxHave {
				break
			}
			r.have = r.have[maxHave:]
		}
	}
	if len(e.b) > 0 {
		if err := c.send(framePlan, func(x *enc) { x.raw(e.b) }); err != nil {
			return err
		}
	}
	return c.send(framePlanEnd, func(x *enc) { encodePlanEnd(x, end) })
}

// readPlan reads Plan frames up to PlanEnd. With add, each frame's
// records go to add as they arrive, which refuses what the manifest does
// not allow, and are not kept; without, they are returned.
func readPlan(c *conn, add func([]planRec) error) ([]planRec, planEnd, error) {
	var recs []planRec
	for {
		typ, p, err := c.recv()
		if err != nil {
			return nil, planEnd{}, err
		}
		switch typ {
		case framePlan:
			if recs, err = decodePlan(recs, p); err != nil {
				return nil, planEnd{}, err
			}
			if add != nil {
				if err := add(recs); err != nil {
					return nil, planEnd{}, err
				}
				recs = recs[:0]
			}
		case framePlanEnd:
			pe, err := decodePlanEnd(p)
			return recs, pe, err
		default:
			return nil, planEnd{}, protoErr("unexpected frame type %d in a plan", typ)
		}
	}
}
