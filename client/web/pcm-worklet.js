/*
 * AudioWorklet processor of the studio's Avatar tab: hands every block of mono float samples it
 * hears (the microphone, or a dropped file played into it) to the page, which sends them to the
 * server as PCM input messages. It outputs silence, so nothing is played twice.
 */
class PcmTap extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const mono = new Float32Array(input[0].length);
      for (const channel of input) for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / input.length;
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}
registerProcessor("pcm-tap", PcmTap);
