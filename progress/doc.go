// Package progress shows a file transfer to the person or program that
// started it: a bar on a terminal, a line every few seconds otherwise,
// JSON lines with --json, nothing with --quiet; then a one-line summary,
// or an error that says whether running the same command again resumes.
// It reads the Events and Stats of package transfer.
package progress
