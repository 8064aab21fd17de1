// lh-fuzz: coverage-guided fuzz targets of lh-server (Targets.swift) and,
// in an ordinary build, their replayer:
//
//   lh-fuzz replay TARGET FILE_OR_DIR...   runs each input once (the
//                                          regression and seed corpora)
//   lh-fuzz seeds TARGET DIR               writes TARGET's seed corpus
//
// scripts/fuzz.sh builds it with libFuzzer (swift build --sanitize=fuzzer
// -Xswiftc -DLH_FUZZING, .build-fuzz/) and runs a target for a given time;
// then libFuzzer's main runs and this file's @main is compiled out.
#if !LH_FUZZING
    import Foundation

    @main struct LHFuzzReplay {
        static func main() throws {
            func usage() -> Never {
                FileHandle.standardError.write(
                    Data(
                        """
                        usage: lh-fuzz replay TARGET FILE_OR_DIR...
                               lh-fuzz seeds TARGET DIR
                        targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))

                        """.utf8))
                exit(2)
            }

            let args = Array(CommandLine.arguments.dropFirst())
            guard args.count >= 3, let target = FuzzTarget(rawValue: args[1]) else { usage() }
            switch args[0] {
            case "seeds":
                try Seeds.write(target, to: URL(fileURLWithPath: args[2]))
            case "replay":
                var files: [URL] = []
                for path in args.dropFirst(2) {
                    let url = URL(fileURLWithPath: path)
                    var isDir: ObjCBool = false
                    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                        FileHandle.standardError.write(Data("lh-fuzz: no such file or directory: \(path)\n".utf8))
                        exit(2)
                    }
                    if isDir.boolValue {
                        let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
                        files += names.filter { !$0.hasPrefix(".") }.map { url.appendingPathComponent($0) }
                    } else {
                        files.append(url)
                    }
                }
                for file in files {
                    let data = try Data(contentsOf: file)
                    data.withUnsafeBytes { target.run($0) }
                }
                print("lh-fuzz: \(target.rawValue): \(files.count) inputs replayed, none crashed")
            default:
                usage()
            }
        }
    }
#endif
