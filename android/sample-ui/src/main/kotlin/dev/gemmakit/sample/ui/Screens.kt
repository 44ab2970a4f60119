package dev.gemmakit.sample.ui

import androidx.compose.foundation.Image
import androidx.compose.foundation.background
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.heightIn
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.shape.RoundedCornerShape
import androidx.compose.material.Button
import androidx.compose.material.Card
import androidx.compose.material.Checkbox
import androidx.compose.material.CircularProgressIndicator
import androidx.compose.material.LinearProgressIndicator
import androidx.compose.material.MaterialTheme
import androidx.compose.material.OutlinedButton
import androidx.compose.material.OutlinedTextField
import androidx.compose.material.Text
import androidx.compose.material.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.text.font.FontStyle
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.unit.dp
import androidx.compose.ui.unit.sp
import dev.gemmakit.ffi.BackendKind
import dev.gemmakit.ffi.Role
import dev.gemmakit.sample.CaptionViewModel
import dev.gemmakit.sample.ChatViewModel
import dev.gemmakit.sample.ModelViewModel
import dev.gemmakit.sample.TranscribeViewModel
import java.util.Locale

private fun gib(bytes: Long): String = String.format(Locale.ROOT, "%.2f GiB", bytes / 1073741824.0)

/** A failure as the screens show it: red text with a dismiss button. */
@Composable
private fun ErrorBanner(message: String?, onDismiss: () -> Unit) {
    if (message == null) return
    Row(
        Modifier.fillMaxWidth().background(Color(0xFFFDECEA)).padding(8.dp),
        verticalAlignment = Alignment.CenterVertically,
    ) {
        Text(message, Modifier.weight(1f), color = Color(0xFFB3261E), fontSize = 13.sp)
        TextButton(onClick = onDismiss) { Text("OK") }
    }
}

/** The backend line: a CPU fallback is shown in amber with its reason. */
@Composable
private fun BackendLine(backend: BackendKind, device: String, reason: String) {
    val color = if (backend == BackendKind.GPU) Color(0xFF1B5E20) else Color(0xFF8A5A00)
    Text("Backend: ${backend.name} — $device", color = color, fontWeight = FontWeight.Bold, fontSize = 13.sp)
    Text(reason, color = color, fontSize = 12.sp)
}

// ---------------------------------------------------------------------- model

@Composable
fun ModelScreen(vm: ModelViewModel, shell: PlatformShell) {
    val state by vm.state.collectAsState()
    Column(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        ErrorBanner(state.message, vm::dismissMessage)
        val loaded = state.loaded
        Card(Modifier.fillMaxWidth(), elevation = 2.dp) {
            Column(Modifier.padding(12.dp)) {
                when {
                    state.loading != null -> Row(verticalAlignment = Alignment.CenterVertically) {
                        CircularProgressIndicator(Modifier.width(20.dp).height(20.dp))
                        Spacer(Modifier.width(8.dp))
                        Text("Loading ${state.loading}")
                    }
                    loaded != null -> {
                        Text("Loaded: ${loaded.name} (${loaded.architecture})", fontWeight = FontWeight.Bold)
                        Text(java.io.File(loaded.path).name, fontSize = 12.sp)
                        Text("Estimated memory: ${gib(loaded.estimatedMemoryBytes)}", fontSize = 13.sp)
                        BackendLine(loaded.backend, loaded.device, loaded.backendReason)
                        TextButton(onClick = vm::unload) { Text("Unload") }
                    }
                    else -> Text("No model loaded")
                }
                Text(
                    "Available memory: " + (state.availableMemoryBytes?.let(::gib) ?: "unknown"),
                    fontSize = 13.sp,
                )
                shell.memoryNote?.let { Text(it, fontSize = 12.sp, fontStyle = FontStyle.Italic) }
                shell.pickModelFile?.let { pick -> OutlinedButton(onClick = pick) { Text("Open a .gguf file…") } }
            }
        }
        state.download?.let { d ->
            Text("Downloading ${d.name}: ${gib(d.downloaded)}" + (d.total?.let { " of ${gib(it)}" } ?: ""))
            val f = d.fraction
            if (f != null) LinearProgressIndicator(progress = f, Modifier.fillMaxWidth()) else LinearProgressIndicator(Modifier.fillMaxWidth())
            TextButton(onClick = vm::cancelDownload) { Text("Cancel download") }
        }
        Text("Catalogue", style = MaterialTheme.typography.h6)
        LazyColumn(verticalArrangement = Arrangement.spacedBy(4.dp)) {
            items(state.catalogue, key = { it.model.name }) { item ->
                Row(Modifier.fillMaxWidth(), verticalAlignment = Alignment.CenterVertically) {
                    Column(Modifier.weight(1f)) {
                        Text(item.model.name, fontWeight = FontWeight.Medium, fontSize = 14.sp)
                        val size = item.model.size?.let { gib(it.toLong()) } ?: "size unknown"
                        val fits = when (item.fitsInMemory) {
                            true -> "fits"
                            false -> "needs ${item.model.minRamMb} MB: too big for this device"
                            null -> "needs ${item.model.minRamMb} MB"
                        }
                        Text("${item.model.quantization} · $size · $fits", fontSize = 12.sp)
                    }
                    if (item.downloaded) {
                        TextButton(onClick = { vm.load(item.path) }) { Text("Load") }
                        TextButton(onClick = { vm.delete(item.model.name) }) { Text("Delete") }
                    } else if (item.model.context > 0u) {
                        TextButton(onClick = { vm.download(item.model.name) }, enabled = state.download == null) {
                            Text("Download")
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------- chat

@Composable
fun ChatScreen(vm: ChatViewModel) {
    val state by vm.state.collectAsState()
    var input by remember { mutableStateOf("") }
    var system by remember { mutableStateOf(state.systemPrompt) }
    Column(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(6.dp)) {
        Text(state.backend, fontSize = 12.sp, color = Color(0xFF555555))
        ErrorBanner(state.message, vm::dismissMessage)
        Row(verticalAlignment = Alignment.CenterVertically) {
            OutlinedTextField(
                value = system,
                onValueChange = { system = it; vm.setSystemPrompt(it) },
                label = { Text("System prompt") },
                modifier = Modifier.weight(1f),
                singleLine = true,
            )
            Checkbox(checked = state.thinking, onCheckedChange = vm::setThinking)
            Text("Thinking", fontSize = 13.sp)
        }
        LazyColumn(Modifier.weight(1f).fillMaxWidth(), verticalArrangement = Arrangement.spacedBy(6.dp)) {
            items(state.lines) { line ->
                val mine = line.role == Role.USER
                Box(Modifier.fillMaxWidth(), contentAlignment = if (mine) Alignment.CenterEnd else Alignment.CenterStart) {
                    Column(
                        Modifier.background(
                            if (mine) Color(0xFFD7E3FF) else Color(0xFFF1F1F1),
                            RoundedCornerShape(10.dp),
                        ).padding(10.dp).fillMaxWidth(0.85f),
                    ) {
                        if (line.thought.isNotEmpty()) {
                            Text(line.thought, fontStyle = FontStyle.Italic, fontSize = 12.sp, color = Color.Gray)
                        }
                        Text(line.text.ifEmpty { if (state.generating) "…" else "" })
                    }
                }
            }
        }
        state.statsLine?.let { Text(it, fontSize = 12.sp, color = Color(0xFF555555)) }
        Row(verticalAlignment = Alignment.CenterVertically, horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            OutlinedTextField(
                value = input,
                onValueChange = { input = it },
                label = { Text("Message") },
                modifier = Modifier.weight(1f),
            )
            if (state.generating) {
                Button(onClick = vm::stop) { Text("Stop") }
            } else {
                Button(onClick = { vm.send(input); input = "" }, enabled = input.isNotBlank()) { Text("Send") }
            }
            TextButton(onClick = vm::clear, enabled = !state.generating) { Text("Clear") }
        }
    }
}

// ---------------------------------------------------------------------- caption

@Composable
fun CaptionScreen(vm: CaptionViewModel, shell: PlatformShell) {
    val state by vm.state.collectAsState()
    Column(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        ErrorBanner(state.message, vm::dismissMessage)
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(onClick = { shell.pickImage { vm.caption(it) } }, enabled = !state.busy) { Text("Pick a photo") }
            shell.takePhoto?.let { take ->
                Button(onClick = { take { vm.caption(it) } }, enabled = !state.busy) { Text("Take a photo") }
            }
        }
        val bitmap = remember(state.image) { state.image?.let(shell.decodeImage) }
        if (bitmap != null) {
            Image(bitmap, contentDescription = "the image to caption", Modifier.fillMaxWidth().height(240.dp))
        }
        if (state.busy) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                CircularProgressIndicator(Modifier.width(20.dp).height(20.dp))
                Spacer(Modifier.width(8.dp))
                Text("Describing the image…")
            }
        }
        if (state.caption.isNotEmpty()) {
            Text("Caption", style = MaterialTheme.typography.subtitle2)
            Text(state.caption)
        }
        state.statsLine?.let { Text(it, fontSize = 12.sp, color = Color(0xFF555555)) }
    }
}

// ---------------------------------------------------------------------- transcribe

@Composable
fun TranscribeScreen(vm: TranscribeViewModel, shell: PlatformShell) {
    val state by vm.state.collectAsState()
    Column(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        ErrorBanner(state.message, vm::dismissMessage)
        OutlinedTextField(
            value = state.language,
            onValueChange = vm::setLanguage,
            label = { Text("Language") },
            singleLine = true,
        )
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            val start = shell.startRecording
            val stop = shell.stopRecording
            if (start != null && stop != null) {
                if (state.recording) {
                    Button(onClick = { stop(vm) }) { Text("Stop and transcribe") }
                } else {
                    Button(onClick = { start(vm) }, enabled = !state.busy) { Text("Record") }
                }
            }
            shell.pickWav?.let { pick ->
                OutlinedButton(onClick = { pick { vm.transcribeWav(it) } }, enabled = !state.busy && !state.recording) {
                    Text("Open a WAV file…")
                }
            }
        }
        Text(
            String.format(Locale.ROOT, "%.1f s of audio", state.seconds) +
                if (state.seconds > 30) " (transcribed in 30 s clips)" else "",
            fontSize = 13.sp,
        )
        if (state.busy) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                CircularProgressIndicator(Modifier.width(20.dp).height(20.dp))
                Spacer(Modifier.width(8.dp))
                Text("Transcribing…")
            }
        }
        if (state.text.isNotEmpty()) {
            Text("Transcript", style = MaterialTheme.typography.subtitle2)
            Text(state.text)
        }
    }
}
