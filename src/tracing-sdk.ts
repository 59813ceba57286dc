/**
 * The OpenTelemetry SDK, imported only by startTracing() (tracing.ts) when the environment asks
 * for traces: a NodeTracerProvider (AsyncLocalStorage context, W3C trace-context propagation;
 * sampler, batch and span limits from the standard OTEL_* variables), a resource named by
 * OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (service.name defaults to `bundlefleet`), and the
 * exporters OTEL_TRACES_EXPORTER names: `otlp` (endpoint, headers, timeout from
 * OTEL_EXPORTER_OTLP_*) and `console` (one JSON line per span on stderr, so stdout stays free for
 * `--json`).
 */
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider, SimpleSpanProcessor, type ReadableSpan, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-node';
import { OTLPTraceExporter as OtlpProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as OtlpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import type { TracingHandle, TracingSettings } from './tracing.js';

/** ExportResultCode.SUCCESS from @opentelemetry/core, without importing it for one constant. */
const SUCCESS = 0;

/** Spans as JSON lines on stderr (the SDK's ConsoleSpanExporter writes to stdout). */
class StderrSpanExporter implements SpanExporter {
  export(spans: ReadableSpan[], done: (result: { code: number }) => void): void {
    for (const s of spans) {
      const ctx = s.spanContext();
      process.stderr.write(
        `${JSON.stringify({
          trace_id: ctx.traceId,
          span_id: ctx.spanId,
          parent_span_id: s.parentSpanContext?.spanId,
          name: s.name,
          kind: s.kind,
          start: new Date(s.startTime[0] * 1000 + s.startTime[1] / 1e6).toISOString(),
          duration_ms: s.duration[0] * 1000 + s.duration[1] / 1e6,
          status: s.status.code,
          attributes: s.attributes,
        })}\n`,
      );
    }
    done({ code: SUCCESS });
  }

  async shutdown(): Promise<void> {}
}

export function startTracingSdk(settings: TracingSettings): TracingHandle {
  const spanProcessors: SpanProcessor[] = settings.exporters.map((e) => {
    if (e === 'console') return new SimpleSpanProcessor(new StderrSpanExporter());
    return new BatchSpanProcessor(settings.protocol === 'http/json' ? new OtlpJsonExporter() : new OtlpProtoExporter());
  });
  // Defaults first, then what OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say.
  const resource = resourceFromAttributes({ 'service.name': 'bundlefleet', 'service.version': '0.1.0' }).merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors });
  provider.register();
  return {
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}
