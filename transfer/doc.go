// Package transfer is Burrow's file-transfer protocol, both ends: send
// (push), fetch (pull) and list, over any io.ReadWriteCloser streams. It
// knows nothing of sockets: the client is given a function that opens a
// stream to the server, and the server is handed each stream a client
// opens. The client always opens the streams; the server never does.
//
// # Using it
//
// On the server, one [Server] serves every user and session. Each stream
// whose mux header kind is "file" goes to [Server.ServeFiles] (which looks
// the user up with [ServerConfig.Lookup]) or to [Server.ServeStream] with
// the user's [Endpoint]: a root directory, read and write permissions, and
// size and count quotas. The streams of one transfer find each other
// through the Server, which forgets a transfer when its control stream
// ends.
//
// On the client, a [Client] with an Open function runs [Client.Send],
// [Client.SendStream] (standard input), [Client.Fetch],
// [Client.FetchStream] (standard output) and [Client.List]. Progress
// arrives as [Event] values; each call returns [Stats].
//
// # What a transfer guarantees
//
//   - The sender sends a manifest first (relative path, type, size, mode,
//     modification time of every entry). The receiver checks all of it
//     against the destination before writing anything: unsafe names,
//     tree shape, conflicts under the [Overwrite] policy (listed, all of
//     them, in one error), quotas and free space.
//   - Files move in chunks (4 MiB by default), each hashed with
//     SHA-256 by the sender as it reads and verified by the receiver
//     before it is written; a whole-file hash over the chunk hashes is
//     checked before the file is committed. Several data streams move
//     chunks at once, and small files travel in batches.
//   - The receiver writes ".<name>.<id>.part" next to the destination,
//     with a ".<name>.<id>.journal" of the chunks written; id derives from
//     the source's path, size and modification time. Rerunning the same
//     command after an interruption finds them, verifies the journaled
//     chunks by reading them back, and moves only what is missing. A file
//     is committed by fsync, mode and times, and a rename into place;
//     the directories are fsynced at the end. No file ever appears under
//     its final name incomplete or unverified.
//   - A transfer stopped late can always be finished: a file whose
//     chunks all arrived is committed even when its sender went away
//     before saying it was done; a rerun commits a complete partial file
//     without moving it again; and on the server a rerun waits for the
//     interrupted transfer to finish committing before it plans.
//   - Files already at the destination with the same size and
//     modification time (to the second) are skipped. Under
//     [OverwriteAlways], such files up to 1 MiB are also compared by
//     hash, and sent when they differ.
//   - On the receiving side every filesystem operation goes through an
//     [os.Root]; absolute paths, "..", control characters, backslashes,
//     device files and links that would lead outside the transfer are
//     refused ([UnsafePathError]). Entries must come after their parent
//     directory, so nothing can be placed under a link or a file, and a
//     link already in the destination is never followed into. Setuid,
//     setgid and sticky bits are dropped. In a fetch, the client also
//     refuses entries it did not ask for.
//   - Everything a peer can make the other end hold is bounded ([Limits]):
//     entries per manifest, path length, frame and chunk sizes, streams,
//     files written at once, transfers in progress, and the idle time of
//     every stream. Compressed chunks never expand past their declared
//     size.
//
// Errors name what failed and how to fix it; those a caller must tell
// apart match sentinels such as [ErrConflict], [ErrNoSpace], [ErrQuota],
// [ErrPermission] and [ErrUnsafePath] with errors.Is, including errors
// the peer reported ([RemoteError]).
//
// The wire format is described in docs/transfer.md.
//
// # Where things are
//
// client.go runs the client's calls; server.go admits transfers and
// serves their control and data streams, list.go the listings.
// exchange.go holds the manifest and plan exchange both ends speak,
// over the frames of conn.go and the encodings of wire.go. manifest.go
// defines entries, policies and limits and checks names and trees;
// source.go walks a source tree into a manifest, and sender.go sends its
// chunks, with data.go's buffers and compression and hash.go's hashes.
// The receiver (receiver.go) plans a transfer (plan.go) against the
// quota and free-space books (books.go), writes chunks (chunks.go) into
// partial files (partial.go) with their journals (journal.go), and
// commits them (commit.go). errors.go holds the errors and their wire
// codes, events.go the client's progress; the *_linux, *_unix and
// *_other files hold what differs by platform.
package transfer
