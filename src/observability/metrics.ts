/** Prometheus metrics. One registry per gateway instance, so tests can run several. */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly duration: Histogram<'method' | 'route' | 'status'>;
  readonly bytesIn: Counter<'route'>;
  readonly bytesOut: Counter<'route'>;
  readonly storageOps: Counter<'driver' | 'op' | 'result'>;
  readonly storageDuration: Histogram<'driver' | 'op'>;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'gateway_http_requests_total',
      help: 'HTTP requests by method, route and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'gateway_http_request_duration_seconds',
      help: 'HTTP request latency by method, route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.bytesIn = new Counter({
      name: 'gateway_http_received_bytes_total',
      help: 'Request body bytes received, by route',
      labelNames: ['route'],
      registers,
    });
    this.bytesOut = new Counter({
      name: 'gateway_http_sent_bytes_total',
      help: 'Response body bytes sent, by route',
      labelNames: ['route'],
      registers,
    });
    this.storageOps = new Counter({
      name: 'gateway_storage_operations_total',
      help: 'Blob store operations by driver, operation and result',
      labelNames: ['driver', 'op', 'result'],
      registers,
    });
    this.storageDuration = new Histogram({
      name: 'gateway_storage_operation_duration_seconds',
      help: 'Blob store operation latency by driver and operation',
      labelNames: ['driver', 'op'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    });
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
