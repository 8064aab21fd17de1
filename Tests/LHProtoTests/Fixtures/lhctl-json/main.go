// Prints each case of this folder as LittleHorse's lhctl prints a message:
// Go's protojson with EmitUnpopulated and a two-space indent (lhctl's
// common.PrintResp). Run by make-lhctl-json.sh; the output is committed and
// LHProtoJSONTests compares LHProtoJSON's output with it.
//
//	go run main.go DESCRIPTOR_SET DIR
//
// For every DIR/NAME.in.json ({"type": "littlehorse.Variable", "message":
// {...}}) it writes DIR/NAME.bin (the message, deterministic binary) and
// DIR/NAME.lhctl.json (what lhctl prints, with protojson's random extra
// space after a key taken out).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

type testCase struct {
	Type    string          `json:"type"`
	Message json.RawMessage `json:"message"`
}

// protojson adds a second space after some keys at random (per binary) so
// that nobody compares its output byte for byte; lhctl's users see one.
var keySpace = regexp.MustCompile(`(?m)^(\s*"(?:[^"\\]|\\.)*"):\s+`)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: main DESCRIPTOR_SET DIR")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		fail("descriptor set: %v", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		fail("descriptor set: %v", err)
	}
	inputs, _ := filepath.Glob(filepath.Join(os.Args[2], "*.in.json"))
	for _, in := range inputs {
		name := strings.TrimSuffix(in, ".in.json")
		text, err := os.ReadFile(in)
		if err != nil {
			fail("%v", err)
		}
		var c testCase
		if err := json.Unmarshal(text, &c); err != nil {
			fail("%s: %v", in, err)
		}
		d, err := files.FindDescriptorByName(protoreflect.FullName(c.Type))
		if err != nil {
			fail("%s: %v", in, err)
		}
		md, ok := d.(protoreflect.MessageDescriptor)
		if !ok {
			fail("%s: %s is not a message", in, c.Type)
		}
		m := dynamicpb.NewMessage(md)
		if err := protojson.Unmarshal(c.Message, m); err != nil {
			fail("%s: %v", in, err)
		}
		bin, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			fail("%s: %v", in, err)
		}
		printed, err := protojson.MarshalOptions{Indent: "  ", EmitUnpopulated: true}.Marshal(m)
		if err != nil {
			fail("%s: %v", in, err)
		}
		printed = keySpace.ReplaceAll(printed, []byte("$1: "))
		if err := os.WriteFile(name+".bin", bin, 0o644); err != nil {
			fail("%v", err)
		}
		if err := os.WriteFile(name+".lhctl.json", append(printed, '\n'), 0o644); err != nil {
			fail("%v", err)
		}
		fmt.Printf("%s: %s, %d bytes\n", filepath.Base(name), c.Type, len(bin))
	}
}
