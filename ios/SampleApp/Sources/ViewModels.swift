// The sample app's view models: one to one with android/sample-core (ModelViewModel,
// ChatViewModel, CaptionViewModel, TranscribeViewModel, Wav), which is where they are tested
// (JUnit on the JVM). Not compiled on the development machines (no Xcode there).
import Foundation
import GemmaKit

/// What the screens show for a failure (Kotlin: `userMessage`).
func userMessage(_ error: Error) -> String { String(describing: error) }

/// One line under an answer (Kotlin: `statsLine`).
func statsLine(_ s: GenerationStats) -> String {
    String(format: "%d tokens · %.1f tok/s · first token %.0f ms · %@",
           Int(s.generatedTokens), s.decodeTokS, s.timeToFirstTokenMs, "\(s.stopReason)")
}

struct CatalogueItem: Identifiable {
    let model: CatalogueModel
    let path: String
    let downloaded: Bool
    let fitsInMemory: Bool?
    var id: String { model.name }
}

struct DownloadState {
    let name: String
    let downloaded: UInt64
    let total: UInt64?
    var fraction: Double? { total.flatMap { $0 > 0 ? Double(downloaded) / Double($0) : nil } }
}

struct LoadedModel {
    let path: String
    let name: String
    let architecture: String
    let estimatedMemoryBytes: UInt64
    let backend: BackendReport
}

@MainActor
final class ModelViewModel: ObservableObject {
    @Published private(set) var catalogue: [CatalogueItem] = []
    @Published private(set) var availableMemoryBytes: UInt64 = 0
    @Published private(set) var download: DownloadState?
    @Published private(set) var loading: String?
    @Published private(set) var loaded: LoadedModel?
    @Published var message: String?
    @Published private(set) var engine: GemmaEngine?

    let modelsDir: URL
    private let catalogueJson: String?
    private var downloadTask: Task<Void, Never>?

    init(modelsDir: URL, catalogueJson: String? = nil) {
        self.modelsDir = modelsDir
        self.catalogueJson = catalogueJson
        try? FileManager.default.createDirectory(at: modelsDir, withIntermediateDirectories: true)
        refresh()
    }

    func refresh() {
        let memory = GemmaDownload.availableMemory()
        availableMemoryBytes = memory
        do {
            catalogue = try GemmaDownload.catalogue(json: catalogueJson).map { m in
                let path = modelsDir.appendingPathComponent(m.relativePath).path
                return CatalogueItem(model: m, path: path,
                                     downloaded: FileManager.default.fileExists(atPath: path),
                                     fitsInMemory: memory > 0 ? m.minRamMb * 1024 * 1024 <= memory : nil)
            }
        } catch { message = userMessage(error) }
    }

    /// Downloads the model and its towers, then loads it (Kotlin: `download`).
    func download(_ name: String, thenLoad: Bool = true) {
        guard downloadTask == nil, let item = catalogue.first(where: { $0.model.name == name }) else { return }
        downloadTask = Task {
            defer { download = nil; downloadTask = nil }
            do {
                for n in [name] + (item.model.mmproj.map { [$0] } ?? []) {
                    let d = try GemmaDownload(catalogueName: n, modelsDir: modelsDir.path, catalogueJson: catalogueJson)
                    for try await p in d.progress() {
                        download = DownloadState(name: n, downloaded: p.downloaded, total: p.total)
                    }
                }
                refresh()
                if thenLoad { await loadNow(item.path) }
            } catch is CancellationError {
            } catch { message = userMessage(error) }
        }
    }

    func cancelDownload() { downloadTask?.cancel() }

    func load(_ path: String) { Task { await loadNow(path) } }

    private func loadNow(_ path: String) async {
        unload()
        loading = path
        defer { loading = nil }
        do {
            // The memory check uses os_proc_available_memory() (the increased-memory-limit
            // entitlement raises it).
            let options = EngineOptions(memoryBudget: GemmaDownload.availableMemory())
            let e = try await GemmaEngine.load(path: path, options: options)
            let info = e.info
            engine = e
            loaded = LoadedModel(path: path, name: info.name.isEmpty ? (path as NSString).lastPathComponent : info.name,
                                 architecture: info.architecture, estimatedMemoryBytes: info.estimatedMemoryBytes,
                                 backend: e.backend)
        } catch { message = userMessage(error) }
    }

    func delete(_ name: String) {
        guard let item = catalogue.first(where: { $0.model.name == name }) else { return }
        if loaded?.path == item.path { unload() }
        try? FileManager.default.removeItem(atPath: item.path)
        try? FileManager.default.removeItem(atPath: item.path + ".part")
        refresh()
    }

    /// Swift frees the engine when the last reference goes (deinit).
    func unload() { engine = nil; loaded = nil }
}

struct ChatLine: Identifiable {
    let id = UUID()
    let role: Role
    var text: String
    var thought: String = ""
}

@MainActor
final class ChatViewModel: ObservableObject {
    @Published private(set) var lines: [ChatLine] = []
    @Published private(set) var generating = false
    @Published var systemPrompt = "" { didSet { conversation?.setSystemPrompt(systemPrompt.isEmpty ? nil : systemPrompt) } }
    @Published var thinking = false { didSet { conversation?.setThinking(thinking) } }
    @Published private(set) var chunks = 0
    @Published private(set) var stats: GenerationStats?
    @Published var message: String?
    let backend: String

    private let conversation: GemmaConversation?
    private let options: GenerateOptions
    private var turn: Task<Void, Never>?

    init(engine: GemmaEngine, options: GenerateOptions = GenerateOptions(maxTokens: 1024)) {
        let b = engine.backend
        backend = "\(b.backend) (\(b.device)): \(b.reason)"
        self.options = options
        do { conversation = try engine.conversation() } catch { conversation = nil; message = userMessage(error) }
    }

    func send(_ prompt: String, options: GenerateOptions? = nil) {
        guard let conversation, !prompt.trimmingCharacters(in: .whitespaces).isEmpty, turn == nil else { return }
        let options = options ?? self.options
        lines += [ChatLine(role: .user, text: prompt), ChatLine(role: .assistant, text: "")]
        generating = true
        chunks = 0
        turn = Task {
            do {
                for try await event in conversation.events(prompt, options: options) {
                    switch event {
                    case .text(let t): lines[lines.count - 1].text += t; chunks += 1
                    case .thought(let t): lines[lines.count - 1].thought += t
                    default: break
                    }
                }
            } catch is CancellationError {
            } catch { message = userMessage(error) }
            stats = conversation.lastStats ?? stats
            generating = false
            turn = nil
        }
    }

    /// Within one token: ending the stream's consumer cancels the native turn.
    func stop() { turn?.cancel() }

    func clear() {
        guard turn == nil, let conversation else { return }
        try? conversation.reset()
        conversation.setSystemPrompt(systemPrompt.isEmpty ? nil : systemPrompt)
        conversation.setThinking(thinking)
        lines = []; chunks = 0; stats = nil
    }

    /// Leaving the screen (Kotlin: `close`).
    func close() { stop() }
}

@MainActor
final class CaptionViewModel: ObservableObject {
    @Published private(set) var image: Data?
    @Published private(set) var caption = ""
    @Published private(set) var busy = false
    @Published private(set) var stats: GenerationStats?
    @Published var message: String?
    private let engine: GemmaEngine
    private let options: GenerateOptions

    init(engine: GemmaEngine, options: GenerateOptions = GenerateOptions(maxTokens: 128)) {
        self.engine = engine
        self.options = options
    }

    func caption(_ data: Data) {
        guard !busy else { return }
        image = data; caption = ""; stats = nil; message = nil; busy = true
        Task {
            defer { busy = false }
            do {
                let result = try await engine.caption(data, options: options)
                caption = result.text.trimmingCharacters(in: .whitespacesAndNewlines)
                stats = result.stats
            } catch { message = userMessage(error) }
        }
    }
}

@MainActor
final class TranscribeViewModel: ObservableObject {
    @Published private(set) var recording = false
    @Published private(set) var seconds = 0.0
    @Published var language = "English"
    @Published private(set) var text = ""
    @Published private(set) var busy = false
    @Published var message: String?
    let sampleRate = 16_000
    private let engine: GemmaEngine
    private let options: GenerateOptions
    private var recorded: [Float] = []

    init(engine: GemmaEngine, options: GenerateOptions = GenerateOptions(maxTokens: 448)) {
        self.engine = engine
        self.options = options
    }

    func failed(_ message: String) { recording = false; self.message = message }

    func startRecording() { recorded = []; recording = true; seconds = 0; text = ""; message = nil }

    func append(_ samples: [Float]) {
        guard recording else { return }
        recorded += samples.prefix(Wav.maxSamples - recorded.count)
        seconds = Double(recorded.count) / Double(sampleRate)
        if recorded.count >= Wav.maxSamples { recording = false }
    }

    func stopRecording() { recording = false; transcribePcm(recorded, sampleRate: sampleRate) }

    func transcribePcm(_ samples: [Float], sampleRate: Int, channels: Int = 1) {
        seconds = Double(samples.count) / Double(channels * sampleRate)
        transcribeWav(Wav.encode(samples, sampleRate: sampleRate, channels: channels))
    }

    func transcribeWav(_ wav: Data) {
        guard !busy else { return }
        busy = true; text = ""; message = nil
        Task {
            defer { busy = false }
            do {
                text = try await engine.transcribe(wav: wav, language: language, options: options)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            } catch { message = userMessage(error) }
        }
    }
}

/// 16-bit PCM WAV from float samples (Kotlin: `Wav`).
enum Wav {
    static let maxSamples = 10 * 60 * 16_000

    static func encode(_ samples: [Float], sampleRate: Int, channels: Int = 1) -> Data {
        var d = Data()
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { d.append(contentsOf: $0) } }
        func u16(_ v: Int) { withUnsafeBytes(of: UInt16(v).littleEndian) { d.append(contentsOf: $0) } }
        let data = samples.count * 2
        d.append(contentsOf: Array("RIFF".utf8)); u32(36 + data); d.append(contentsOf: Array("WAVE".utf8))
        d.append(contentsOf: Array("fmt ".utf8)); u32(16); u16(1); u16(channels); u32(sampleRate)
        u32(sampleRate * channels * 2); u16(channels * 2); u16(16)
        d.append(contentsOf: Array("data".utf8)); u32(data)
        for s in samples {
            let v = Int16((max(-1, min(1, s)) * 32767).rounded())
            withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) }
        }
        return d
    }
}
