package actors

import "time"

// clockBase anchors the monotonic timestamps carried in messages and
// handles (deadlines, last use, enqueue time): int64 nanoseconds are cheaper
// to store atomically than time.Time.
var clockBase = time.Now()

// monotime returns monotonic nanoseconds since clockBase (no wall-clock
// jumps).
func monotime() int64 { return int64(time.Since(clockBase)) }

func durationNS(ns int64) time.Duration { return time.Duration(ns) }
