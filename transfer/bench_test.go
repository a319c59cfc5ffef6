package transfer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkTransfer sends a large file and many small files over
// in-memory transports:
//
//	go test -run '^$' -bench Transfer -benchmem ./transfer/
func BenchmarkTransfer(b *testing.B) {
	for _, tc := range []struct {
		name     string
		nodes    func() []node
		bytes    int64
		compress bool
	}{
		{name: "large", nodes: func() []node { return []node{{path: "large.bin", data: randBytes(1, 64<<20)}} }, bytes: 64 << 20},
		{name: "large-compressible", nodes: func() []node { return []node{{path: "large.bin", data: make([]byte, 64<<20)}} }, bytes: 64 << 20, compress: true},
		{name: "small-files", nodes: func() []node {
			nodes := []node{{path: "d", dir: true}}
			for i := range 1000 {
				nodes = append(nodes, node{path: fmt.Sprintf("d/f%04d", i), data: randBytes(uint64(i), 4096)})
			}
			return nodes
		}, bytes: 1000 * 4096},
	} {
		for _, transport := range []string{"pipe", "yamux"} {
			b.Run(tc.name+"/"+transport, func(b *testing.B) {
				src := b.TempDir()
				nodes := tc.nodes()
				makeTree(b, src, nodes)
				h := newHarness(b, ServerConfig{}, Endpoint{Write: true})
				if transport == "yamux" {
					h.useYamux()
				}
				cl := h.client()
				cl.Compress = tc.compress
				top := filepath.Join(src, nodes[0].path)
				b.SetBytes(tc.bytes)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					dest := fmt.Sprint(i)
					if _, err := cl.Send(context.Background(), []string{top}, dest); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					os.RemoveAll(filepath.Join(h.ep.Root, dest))
					b.StartTimer()
				}
			})
		}
	}
}
