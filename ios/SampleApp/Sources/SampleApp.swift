// The GemmaKit sample app for iOS (SwiftUI): the four screens of the Android and desktop apps
// over the Swift wrapper. Not compiled on the development machines (no Xcode there).
import AVFoundation
import GemmaKit
import PhotosUI
import SwiftUI

@main
struct SampleApp: App {
    // Models live in Documents/models: download from the catalogue, or sideload with Finder's
    // file sharing (UIFileSharingEnabled) into the app's "models" folder.
    @StateObject private var models = ModelViewModel(
        modelsDir: FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
            .appendingPathComponent("models"))

    var body: some Scene {
        WindowGroup {
            TabView {
                ModelScreen(vm: models).tabItem { Label("Model", systemImage: "shippingbox") }
                EngineGate(models: models) { ChatScreen(vm: ChatViewModel(engine: $0)) }
                    .tabItem { Label("Chat", systemImage: "bubble.left.and.bubble.right") }
                EngineGate(models: models) { CaptionScreen(vm: CaptionViewModel(engine: $0)) }
                    .tabItem { Label("Caption", systemImage: "camera") }
                EngineGate(models: models) { TranscribeScreen(vm: TranscribeViewModel(engine: $0)) }
                    .tabItem { Label("Transcribe", systemImage: "waveform") }
            }
        }
    }
}

/// The other screens need a loaded engine.
struct EngineGate<Content: View>: View {
    @ObservedObject var models: ModelViewModel
    let content: (GemmaEngine) -> Content
    var body: some View {
        if let engine = models.engine { content(engine) } else { Text("Load a model on the Model screen first.") }
    }
}

struct ErrorBanner: View {
    @Binding var message: String?
    var body: some View {
        if let m = message {
            HStack { Text(m).foregroundColor(.red).font(.footnote); Spacer(); Button("OK") { message = nil } }
                .padding(8).background(Color.red.opacity(0.08))
        }
    }
}

struct ModelScreen: View {
    @ObservedObject var vm: ModelViewModel
    var body: some View {
        List {
            ErrorBanner(message: $vm.message)
            Section("Loaded") {
                if let l = vm.loaded {
                    Text("\(l.name) (\(l.architecture))").bold()
                    Text("Estimated memory: \(ByteCountFormatter.string(fromByteCount: Int64(l.estimatedMemoryBytes), countStyle: .memory))")
                    // A CPU fallback is shown in orange with its reason.
                    Text("Backend: \(String(describing: l.backend.backend)) — \(l.backend.device)")
                        .foregroundColor(l.backend.backend == .gpu ? .green : .orange)
                    Text(l.backend.reason).font(.caption)
                    Button("Unload") { vm.unload() }
                } else if let p = vm.loading {
                    ProgressView("Loading \((p as NSString).lastPathComponent)")
                } else {
                    Text("No model loaded")
                }
                Text("Available memory: \(ByteCountFormatter.string(fromByteCount: Int64(vm.availableMemoryBytes), countStyle: .memory))")
            }
            if let d = vm.download {
                Section("Downloading \(d.name)") {
                    ProgressView(value: d.fraction ?? 0)
                    Button("Cancel download") { vm.cancelDownload() }
                }
            }
            Section("Catalogue") {
                ForEach(vm.catalogue) { item in
                    HStack {
                        VStack(alignment: .leading) {
                            Text(item.model.name)
                            Text("\(item.model.quantization) · \(item.fitsInMemory == false ? "too big for this device" : "fits")")
                                .font(.caption)
                        }
                        Spacer()
                        if item.downloaded {
                            Button("Load") { vm.load(item.path) }
                            Button("Delete", role: .destructive) { vm.delete(item.model.name) }
                        } else if item.model.context > 0 {
                            Button("Download") { vm.download(item.model.name) }.disabled(vm.download != nil)
                        }
                    }.buttonStyle(.borderless)
                }
            }
        }
    }
}

struct ChatScreen: View {
    @StateObject var vm: ChatViewModel
    @State private var input = ""
    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            Text(vm.backend).font(.caption).foregroundColor(.secondary)
            ErrorBanner(message: $vm.message)
            HStack { TextField("System prompt", text: $vm.systemPrompt); Toggle("Thinking", isOn: $vm.thinking).fixedSize() }
            ScrollView {
                ForEach(vm.lines) { line in
                    VStack(alignment: .leading) {
                        if !line.thought.isEmpty { Text(line.thought).italic().font(.caption).foregroundColor(.gray) }
                        Text(line.text.isEmpty && vm.generating ? "…" : line.text)
                    }
                    .padding(10)
                    .background(line.role == .user ? Color.blue.opacity(0.15) : Color.gray.opacity(0.12))
                    .cornerRadius(10)
                    .frame(maxWidth: .infinity, alignment: line.role == .user ? .trailing : .leading)
                }
            }
            if let s = vm.stats { Text(statsLine(s)).font(.caption).foregroundColor(.secondary) }
            HStack {
                TextField("Message", text: $input)
                if vm.generating { Button("Stop") { vm.stop() } } else {
                    Button("Send") { vm.send(input); input = "" }.disabled(input.isEmpty)
                }
                Button("Clear") { vm.clear() }.disabled(vm.generating)
            }
        }
        .padding()
        .onDisappear { vm.close() } // leaving the screen cancels the turn
    }
}

struct CaptionScreen: View {
    @StateObject var vm: CaptionViewModel
    @State private var item: PhotosPickerItem?
    @State private var showCamera = false
    var body: some View {
        VStack(alignment: .leading, spacing: 12) {
            ErrorBanner(message: $vm.message)
            HStack {
                PhotosPicker("Pick a photo", selection: $item, matching: .images)
                if UIImagePickerController.isSourceTypeAvailable(.camera) { Button("Take a photo") { showCamera = true } }
            }
            if let data = vm.image, let image = UIImage(data: data) {
                Image(uiImage: image).resizable().scaledToFit().frame(maxHeight: 260)
            }
            if vm.busy { ProgressView("Describing the image…") }
            if !vm.caption.isEmpty { Text(vm.caption) }
            if let s = vm.stats { Text(statsLine(s)).font(.caption).foregroundColor(.secondary) }
            Spacer()
        }
        .padding()
        .onChange(of: item) { newItem in
            Task { if let data = try? await newItem?.loadTransferable(type: Data.self) { vm.caption(data) } }
        }
        .sheet(isPresented: $showCamera) { CameraView { vm.caption($0) } }
    }
}

/// The camera through UIImagePickerController (JPEG bytes).
struct CameraView: UIViewControllerRepresentable {
    let onPhoto: (Data) -> Void
    func makeUIViewController(context: Context) -> UIImagePickerController {
        let picker = UIImagePickerController()
        picker.sourceType = .camera
        picker.delegate = context.coordinator
        return picker
    }
    func updateUIViewController(_ controller: UIImagePickerController, context: Context) {}
    func makeCoordinator() -> Coordinator { Coordinator(onPhoto) }
    final class Coordinator: NSObject, UIImagePickerControllerDelegate, UINavigationControllerDelegate {
        let onPhoto: (Data) -> Void
        init(_ onPhoto: @escaping (Data) -> Void) { self.onPhoto = onPhoto }
        func imagePickerController(_ picker: UIImagePickerController,
                                   didFinishPickingMediaWithInfo info: [UIImagePickerController.InfoKey: Any]) {
            if let image = info[.originalImage] as? UIImage, let jpeg = image.jpegData(compressionQuality: 0.92) { onPhoto(jpeg) }
            picker.dismiss(animated: true)
        }
    }
}

struct TranscribeScreen: View {
    @StateObject var vm: TranscribeViewModel
    @State private var mic = Microphone()
    var body: some View {
        VStack(alignment: .leading, spacing: 12) {
            ErrorBanner(message: $vm.message)
            TextField("Language", text: $vm.language)
            if vm.recording {
                Button("Stop and transcribe") { mic.stop(); vm.stopRecording() }
            } else {
                Button("Record") { mic.start(vm) }.disabled(vm.busy)
            }
            Text(String(format: "%.1f s of audio", vm.seconds) + (vm.seconds > 30 ? " (transcribed in 30 s clips)" : ""))
            if vm.busy { ProgressView("Transcribing…") }
            if !vm.text.isEmpty { Text(vm.text) }
            Spacer()
        }
        .padding()
        .onDisappear { mic.stop() }
    }
}

/// Microphone capture with AVAudioEngine, converted to 16 kHz mono float (the engine's rate).
final class Microphone {
    private let engine = AVAudioEngine()

    @MainActor
    func start(_ vm: TranscribeViewModel) {
        AVAudioApplication.requestRecordPermission { granted in
            Task { @MainActor in
                guard granted else { vm.failed("Microphone permission denied"); return }
                do { try self.run(vm) } catch { vm.failed("Microphone: \(error.localizedDescription)") }
            }
        }
    }

    @MainActor
    private func run(_ vm: TranscribeViewModel) throws {
        try AVAudioSession.sharedInstance().setCategory(.record, mode: .measurement)
        try AVAudioSession.sharedInstance().setActive(true)
        let input = engine.inputNode
        let inFormat = input.outputFormat(forBus: 0)
        guard let outFormat = AVAudioFormat(commonFormat: .pcmFormatFloat32, sampleRate: Double(vm.sampleRate),
                                            channels: 1, interleaved: false),
              let converter = AVAudioConverter(from: inFormat, to: outFormat) else {
            vm.failed("Cannot convert the microphone's audio to 16 kHz"); return
        }
        vm.startRecording()
        input.installTap(onBus: 0, bufferSize: 4096, format: inFormat) { buffer, _ in
            let capacity = AVAudioFrameCount(Double(buffer.frameLength) * outFormat.sampleRate / inFormat.sampleRate) + 1
            guard let out = AVAudioPCMBuffer(pcmFormat: outFormat, frameCapacity: capacity) else { return }
            var fed = false
            converter.convert(to: out, error: nil) { _, status in
                if fed { status.pointee = .noDataNow; return nil }
                fed = true; status.pointee = .haveData; return buffer
            }
            guard let ch = out.floatChannelData?[0] else { return }
            let samples = Array(UnsafeBufferPointer(start: ch, count: Int(out.frameLength)))
            Task { @MainActor in vm.append(samples) }
        }
        try engine.start()
    }

    func stop() {
        engine.inputNode.removeTap(onBus: 0)
        engine.stop()
    }
}
