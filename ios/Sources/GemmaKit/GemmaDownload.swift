// Model downloads over the uniffi-generated `ModelDownload` (see GemmaEngine.swift for how this
// wrapper is checked: not compiled in this repository's CI).

import Foundation
import os

/// One model file to download: resumable (a failed or cancelled download keeps its partial
/// file; the next one for the same file continues it), sha256-verified, one at a time per file.
///
/// ```swift
/// let download = try GemmaDownload(catalogueName: "gemma-4-e2b-it-q4_k_m", modelsDir: modelsURL.path)
/// for try await p in download.progress() { progressView.progress = Double(p.downloaded) / Double(p.total ?? 1) }
/// let engine = try await GemmaEngine.load(path: download.destPath,
///                                         options: EngineOptions(memoryBudget: UInt64(os_proc_available_memory())))
/// ```
public final class GemmaDownload: @unchecked Sendable {
    /// The generated object, for calls the wrapper does not cover.
    public let handle: ModelDownload
    private let lock = NSLock()
    private var finished: DownloadedFile?

    /// Any URL to `destPath`; `sha256`: the expected hex digest; `token`: a bearer token.
    public init(url: String, destPath: String, sha256: String? = nil, token: String? = nil) {
        handle = ModelDownload(url: url, destPath: destPath, sha256: sha256, token: token)
    }

    /// The catalogue model `catalogueName` into `modelsDir`; `catalogueJson`: the app's own
    /// catalogue instead of the built-in one.
    public init(catalogueName: String, modelsDir: String, catalogueJson: String? = nil, token: String? = nil) throws {
        handle = try ModelDownload.fromCatalogue(name: catalogueName, modelsDir: modelsDir,
                                                 catalogueJson: catalogueJson, token: token)
    }

    /// Where the file goes (and is, once `progress()` finished).
    public var destPath: String { handle.destPath() }

    /// The finished file (size, sha256, how it was verified), once `progress()` finished.
    public var result: DownloadedFile? {
        lock.lock()
        defer { lock.unlock() }
        return finished
    }

    /// Runs the download on its own thread and streams its progress (the newest when the
    /// consumer is slower). Finishes when the file is in place; throws `GemmaKitError.Download`
    /// (its `kind` says why). Ending the consumption (Task cancellation) cancels the download;
    /// the partial file is kept.
    public func progress() -> AsyncThrowingStream<DownloadProgress, Error> {
        let handle = self.handle
        return AsyncThrowingStream(bufferingPolicy: .bufferingNewest(1)) { continuation in
            continuation.onTermination = { termination in
                if case .cancelled = termination { handle.cancel() }
            }
            let listener = StreamListener(continuation)
            Thread {
                do {
                    let done = try handle.run(listener: listener)
                    self.lock.lock()
                    self.finished = done
                    self.lock.unlock()
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }.start()
        }
    }

    /// Stops a running download from any thread (the partial file is kept).
    public func cancel() { handle.cancel() }

    /// The built-in catalogue, or the app's own.
    public static func catalogue(json: String? = nil) throws -> [CatalogueModel] {
        try catalogueModels(catalogueJson: json)
    }

    /// What the engine's memory check should compare with on iOS: pass it as
    /// `EngineOptions.memoryBudget` (there is no /proc/meminfo on iOS).
    public static func availableMemory() -> UInt64 { UInt64(os_proc_available_memory()) }
}

private final class StreamListener: DownloadListener, @unchecked Sendable {
    private let continuation: AsyncThrowingStream<DownloadProgress, Error>.Continuation

    init(_ continuation: AsyncThrowingStream<DownloadProgress, Error>.Continuation) {
        self.continuation = continuation
    }

    func onProgress(progress: DownloadProgress) throws {
        continuation.yield(progress)
    }
}
