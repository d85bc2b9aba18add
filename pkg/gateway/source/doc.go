// Package source turns cameras into a stream of encoded frames for the
// gateway: still images replayed from a folder, video files and RTSP
// streams decoded by an ffmpeg subprocess, MJPEG over HTTP
// (multipart/x-mixed-replace) and HTTP snapshot polling.
//
// A Source only produces frames; it does not sample, sequence or publish
// them (package gateway does). It reports every frame it had to throw away
// (too large, not a decodable image) through its Sink so that the gateway
// can count it, and it never holds more than one frame of MaxFrameBytes in
// memory, whatever the camera sends. Run returns nil when a finite source
// (a file without loop) is exhausted and an error when the camera failed;
// the gateway reconnects with back-off on an error.
package source
