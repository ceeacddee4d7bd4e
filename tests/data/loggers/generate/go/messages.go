package main

import "errors"

// The same messages for every library, so the files can be compared line by line.
const (
	msgTrace     = "cache lookup"
	msgDebug     = "cache warmed"
	msgFields    = "user 42 logged in"
	msgWarn      = "disk usage at 91%"
	msgError     = "payment failed"
	msgInSpan    = "charging card"
	msgAfterSpan = "request finished"
	// Non-ASCII, a double quote and an ampersand (Go's encoders may escape & as \u0026).
	msgUnicode = `café "Zürich" & naïve ✓ 日本`
)

var errDeclined = errors.New("card declined: insufficient funds")
