// Package relay is a TCP relay for fault tests.
//
// A test puts a Relay in front of a server (PostgreSQL, or another service
// node) and points its client at Relay.Addr. The relay then makes network
// faults happen deterministically, on every connection or on one:
//
//   - Pass: bytes are forwarded as they arrive.
//   - Hold: a partition. Bytes are still read from both sockets, so writers
//     do not block, but they are buffered instead of delivered. Release
//     delivers every buffered byte in order in each direction and then passes
//     normally, as TCP retransmission would after a partition heals.
//   - SetDelay: every chunk read from then on is written no earlier than the
//     delay after it was read.
//   - Reset: both sockets of a connection are closed with SO_LINGER 0, so
//     the peers see ECONNRESET, and buffered bytes are dropped.
//
// The semantics tests may rely on:
//
//   - Order is preserved within each direction, whatever the holds, delays
//     and releases.
//   - Held bytes survive the sender closing its socket. If a client writes
//     while held and then closes, Release still writes every held byte to the
//     target and only then half-closes the target side (CloseWrite), like a
//     FIN that arrives after retransmitted data. Bytes that can no longer be
//     delivered (the receiver has gone) are discarded silently.
//   - The end of one direction is passed on as a half-close (CloseWrite), so
//     protocols that half-close work. A read error, including a reset by the
//     peer, ends a direction in the same way. A connection ends, and its
//     sockets are closed, once both directions have ended.
//   - The upstream dial waits while a connection is held: a connection
//     accepted during a partition, or held by an OnAccept callback, does not
//     reach the target until it is released. Meanwhile its client bytes are
//     read and buffered, and they are delivered once the dial succeeds. If
//     the dial fails the client connection is closed.
//   - Hold takes effect between chunks: once Hold returns no further chunk
//     is started, but a write that has already begun completes.
//   - All methods are safe for concurrent use while traffic flows. Close
//     stops listening, closes every connection and waits for every goroutine
//     the relay started.
//
// A Relay is meant for tests only: buffers are unbounded and nothing is
// logged.
package relay
