// Package onnxpb holds the Go types of the ONNX model format, generated from
// onnx.proto (ONNX 1.12, as shipped in Debian's libonnx-dev; Apache-2.0).
//
// Regenerate with `go tool task gen:onnx` (needs Debian's protobuf-compiler);
// the generated file is committed so that building needs no protoc.
package onnxpb

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/facegate/facegate/pkg/onnx/onnxpb onnx.proto"
