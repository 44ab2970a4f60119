// The Swift face of GemmaKit over the uniffi-generated bindings (Generated/, same module).
//
// NOT COMPILED in this repository's CI: it runs on Linux without a Swift toolchain or Apple SDK.
// Checked there: the bindings generate (scripts/gen-bindings.sh) and the Rust crate checks for
// aarch64-apple-ios. Build and test on a Mac: `swift build` after build-xcframework.sh.

import Foundation

/// A loaded model. Load once (seconds for a real model), open conversations. Freed when the
/// last reference (this engine and the conversations opened from it) goes away.
public final class GemmaEngine: @unchecked Sendable {
    /// The generated object, for calls the wrapper does not cover.
    public let engine: Engine

    private init(engine: Engine) {
        self.engine = engine
    }

    /// Loads a `.gguf` file or a Hugging Face checkpoint directory off the caller's thread.
    /// Throws `GemmaKitError` (`.Io` for a missing file, `.InvalidWeightFile` for a corrupt one).
    public static func load(path: String, options: EngineOptions = EngineOptions()) async throws -> GemmaEngine {
        try await runOffThread {
            GemmaEngine(engine: try Engine.load(path: path, options: options))
        }
    }

    /// Which backend runs (CPU or GPU), on which device, and why.
    public var backend: BackendReport { engine.backend() }

    /// The CPU activation numerics that run per phase (`.exact` on a GPU, or where the CPU has
    /// no fast int8 kernel for what `EngineOptions.prefillActivations`/`decodeActivations` asked).
    public var activations: ActivationReport { engine.activations() }

    /// Architecture, sizes, weight types and memory estimate.
    public var info: ModelInfo { engine.info() }

    /// Maximum positions per conversation.
    public var contextLen: Int { Int(engine.contextLen()) }

    /// Prepares constrained decoding (JSON schema, regex, grammar, strict tools) off the
    /// caller's thread; otherwise the first constrained request pays for it.
    public func prepareConstraints() async throws {
        let engine = self.engine
        try await runOffThread { try engine.prepareConstraints() }
    }

    /// Runs a short scratch generation off the caller's thread so the first message does not
    /// pay the backend's first-use costs (Metal pipeline compilation); returns the milliseconds
    /// it took. Call it after loading.
    @discardableResult
    public func warmUp() async throws -> Double {
        let engine = self.engine
        return try await runOffThread { try engine.warmUp() }
    }

    /// Describes an image (JPEG/PNG/WebP bytes) with Google's captioning prompt, off the caller's thread.
    public func caption(_ image: Data, options: GenerateOptions = GenerateOptions()) async throws -> GenerationResult {
        let engine = self.engine
        return try await runOffThread { try engine.caption(image: image, options: options, sink: nil) }
    }

    /// Transcribes a WAV file's speech in `language` (e.g. "English"); audio over 30 s is
    /// transcribed clip by clip.
    public func transcribe(wav: Data, language: String, options: GenerateOptions = GenerateOptions()) async throws -> String {
        let engine = self.engine
        return try await runOffThread { try engine.transcribeWav(wav: wav, language: language, options: options) }
    }

    /// A new, empty conversation.
    public func conversation() throws -> GemmaConversation {
        GemmaConversation(try engine.conversation())
    }
}

/// What a turn streams, in order: text, thoughts and tool calls as produced, then `.finished`.
public enum GenerationEvent: Sendable {
    case text(String)
    case thought(String)
    case toolCall(ToolCall)
    case finished(GenerationResult)
}

/// A multi-turn chat with its own KV cache. Turns on one conversation run one at a time;
/// different conversations may generate concurrently.
///
/// Generation runs on a dedicated thread. Ending the stream's consumer (breaking out of the
/// `for try await` loop, or cancelling its task) cancels the generation within one token:
/// `onTermination` calls `cancel()`, and the sink answers `.stop`. (Task cancellation does not
/// reach Rust by itself in uniffi 0.32: uniffi #2771.)
public final class GemmaConversation: @unchecked Sendable {
    /// The generated object, for calls the wrapper does not cover.
    public let conversation: Conversation

    init(_ conversation: Conversation) {
        self.conversation = conversation
    }

    /// Streams the answer to `prompt` as text chunks.
    public func generate(_ prompt: String, options: GenerateOptions = GenerateOptions()) -> AsyncThrowingStream<String, Error> {
        let events = self.events(prompt, options: options)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await event in events {
                        if case .text(let text) = event { continuation.yield(text) }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Streams every event of the answer to `prompt`.
    public func events(_ prompt: String, options: GenerateOptions = GenerateOptions()) -> AsyncThrowingStream<GenerationEvent, Error> {
        let conversation = self.conversation
        return turn { sink in try conversation.send(text: prompt, options: options, sink: sink) }
    }

    /// The whole answer to `prompt`. Cancelling the task cancels the generation.
    public func send(_ prompt: String, options: GenerateOptions = GenerateOptions()) async throws -> GenerationResult {
        try await Self.result(of: events(prompt, options: options))
    }

    /// Streams the answer to a message of text and media parts in order, e.g.
    /// `[.image(bytes: jpeg, maxSoftTokens: nil), .text(text: "What is this?")]`.
    public func events(parts: [MessagePart], options: GenerateOptions = GenerateOptions()) -> AsyncThrowingStream<GenerationEvent, Error> {
        let conversation = self.conversation
        return turn { sink in try conversation.sendParts(parts: parts, options: options, sink: sink) }
    }

    /// The whole answer to a multimodal message.
    public func send(parts: [MessagePart], options: GenerateOptions = GenerateOptions()) async throws -> GenerationResult {
        try await Self.result(of: events(parts: parts, options: options))
    }

    /// Streams the model's continuation after the result of the tool `toolName`.
    public func toolResultEvents(toolName: String, content: String, options: GenerateOptions = GenerateOptions()) -> AsyncThrowingStream<GenerationEvent, Error> {
        let conversation = self.conversation
        return turn { sink in
            try conversation.sendToolResult(toolName: toolName, content: content, options: options, sink: sink)
        }
    }

    /// Answers the model's tool call with its result; returns the model's continuation.
    public func sendToolResult(toolName: String, content: String, options: GenerateOptions = GenerateOptions()) async throws -> GenerationResult {
        try await Self.result(of: toolResultEvents(toolName: toolName, content: content, options: options))
    }

    /// Stops the running generation within one token, from any thread.
    public func cancel() { conversation.cancel() }

    /// An independent copy (the KV cache is shared copy-on-write: no prefill).
    public func fork() throws -> GemmaConversation { GemmaConversation(try conversation.fork()) }

    /// Forgets every message (the system prompt too) and the cache.
    public func reset() throws { try conversation.reset() }

    public func setSystemPrompt(_ text: String?) { conversation.setSystemPrompt(text: text) }

    /// Gemma 4 thinking mode: thoughts arrive as `.thought`.
    public func setThinking(_ enabled: Bool) { conversation.setThinking(enabled: enabled) }

    /// Tool declarations, each a JSON object in OpenAI function format.
    public func setTools(_ toolsJson: [String]) throws { try conversation.setTools(toolsJson: toolsJson) }

    public var messages: [ChatMessage] { conversation.messages() }

    public var cachedTokens: Int { Int(conversation.cachedTokens()) }

    /// Statistics of the last finished turn (nil before the first); never waits for a running one.
    public var lastStats: GenerationStats? { conversation.lastStats() }

    /// One turn as a stream: the blocking native call runs on its own thread; its sink yields
    /// into the stream. The stream ends after the native call has returned.
    private func turn(_ run: @escaping @Sendable (GenerationSink) throws -> GenerationResult) -> AsyncThrowingStream<GenerationEvent, Error> {
        let conversation = self.conversation
        return AsyncThrowingStream { continuation in
            let sink = StreamSink(continuation)
            continuation.onTermination = { termination in
                if case .cancelled = termination {
                    sink.stop()
                    conversation.cancel()
                }
            }
            startThread {
                do {
                    let result = try run(sink)
                    continuation.yield(.finished(result))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    private static func result(of events: AsyncThrowingStream<GenerationEvent, Error>) async throws -> GenerationResult {
        for try await event in events {
            if case .finished(let result) = event { return result }
        }
        throw CancellationError()
    }
}

/// Forwards chunks into a stream; answers `.stop` once the stream's consumer has gone.
private final class StreamSink: GenerationSink, @unchecked Sendable {
    private let continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation
    private let lock = NSLock()
    private var stopped = false

    init(_ continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation) {
        self.continuation = continuation
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    func onChunk(chunk: Chunk) throws -> SinkFlow {
        if isStopped { return .stop }
        let event: GenerationEvent
        switch chunk {
        case .text(let text): event = .text(text)
        case .thought(let text): event = .thought(text)
        case .tool(let call): event = .toolCall(call)
        }
        if case .terminated = continuation.yield(event) {
            stop()
            return .stop
        }
        return .continue
    }

    func onDone(stats: GenerationStats) throws {}
}

/// Generation runs Rust code (template rendering, decoding) on the calling thread: give it a
/// full-size stack rather than a secondary thread's 512 KiB.
private let workerStackSize = 8 << 20

private func startThread(_ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.stackSize = workerStackSize
    thread.name = "GemmaKit generation"
    thread.start()
}

private func runOffThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        startThread {
            do {
                continuation.resume(returning: try body())
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}
