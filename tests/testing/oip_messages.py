"""The Open Inference Protocol's messages (KServe v2, with Triton's repository calls),
built from the protocol's published message and field numbers (written out below from
the protocol's specification, not generated from the server's .proto), for the tests'
independent clients: `M[name]` is the message class, `call` a unary call on
inference.GRPCInferenceService with grpcio's generic stubs."""
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
T = {'bool': F.TYPE_BOOL, 'string': F.TYPE_STRING, 'int64': F.TYPE_INT64, 'int32': F.TYPE_INT32,
     'uint32': F.TYPE_UINT32, 'uint64': F.TYPE_UINT64, 'float': F.TYPE_FLOAT,
     'double': F.TYPE_DOUBLE, 'bytes': F.TYPE_BYTES}
PARAM = [('bool_param', 1, 'bool'), ('int64_param', 2, 'int64'), ('string_param', 3, 'string'),
         ('double_param', 4, 'double'), ('uint64_param', 5, 'uint64')]
TENSOR = [('name', 1, 'string'), ('datatype', 2, 'string'), ('shape', 3, '*int64'),
          ('parameters', 4, 'map:InferParameter'), ('contents', 5, '.InferTensorContents')]
MESSAGES = {
    'ServerLiveRequest': [], 'ServerLiveResponse': [('live', 1, 'bool')],
    'ServerReadyRequest': [], 'ServerReadyResponse': [('ready', 1, 'bool')],
    'ModelReadyRequest': [('name', 1, 'string'), ('version', 2, 'string')],
    'ModelReadyResponse': [('ready', 1, 'bool')],
    'ServerMetadataRequest': [],
    'ServerMetadataResponse': [('name', 1, 'string'), ('version', 2, 'string'),
                               ('extensions', 3, '*string')],
    'ModelMetadataRequest': [('name', 1, 'string'), ('version', 2, 'string')],
    'TensorMetadata': [('name', 1, 'string'), ('datatype', 2, 'string'), ('shape', 3, '*int64')],
    'ModelMetadataResponse': [('name', 1, 'string'), ('versions', 2, '*string'),
                              ('platform', 3, 'string'), ('inputs', 4, '*.TensorMetadata'),
                              ('outputs', 5, '*.TensorMetadata')],
    'InferParameter': [(n, i, t, 'choice') for n, i, t in PARAM],
    'InferTensorContents': [('bool_contents', 1, '*bool'), ('int_contents', 2, '*int32'),
                            ('int64_contents', 3, '*int64'), ('uint_contents', 4, '*uint32'),
                            ('uint64_contents', 5, '*uint64'), ('fp32_contents', 6, '*float'),
                            ('fp64_contents', 7, '*double'), ('bytes_contents', 8, '*bytes')],
    'InferInputTensor': TENSOR, 'InferOutputTensor': TENSOR,
    'InferRequestedOutputTensor': [('name', 1, 'string'), ('parameters', 2, 'map:InferParameter')],
    'ModelInferRequest': [('model_name', 1, 'string'), ('model_version', 2, 'string'),
                          ('id', 3, 'string'), ('parameters', 4, 'map:InferParameter'),
                          ('inputs', 5, '*.InferInputTensor'),
                          ('outputs', 6, '*.InferRequestedOutputTensor'),
                          ('raw_input_contents', 7, '*bytes')],
    'ModelInferResponse': [('model_name', 1, 'string'), ('model_version', 2, 'string'),
                           ('id', 3, 'string'), ('parameters', 4, 'map:InferParameter'),
                           ('outputs', 5, '*.InferOutputTensor'),
                           ('raw_output_contents', 6, '*bytes')],
    'RepositoryIndexRequest': [('repository_name', 1, 'string'), ('ready', 2, 'bool')],
    'ModelIndex': [('name', 1, 'string'), ('version', 2, 'string'), ('state', 3, 'string'),
                   ('reason', 4, 'string')],
    'RepositoryIndexResponse': [('models', 1, '*.ModelIndex')],
    'ModelRepositoryParameter': [('bool_param', 1, 'bool', 'choice'),
                                 ('int64_param', 2, 'int64', 'choice'),
                                 ('string_param', 3, 'string', 'choice'),
                                 ('bytes_param', 4, 'bytes', 'choice')],
    'RepositoryModelLoadRequest': [('repository_name', 1, 'string'), ('model_name', 2, 'string'),
                                   ('parameters', 3, 'map:ModelRepositoryParameter')],
    'RepositoryModelLoadResponse': [],
}
# Triton's model configuration and statistics extensions (model_config.proto,
# grpc_service.proto); enums as int32 (same wire encoding).
DURATION = '.StatisticDuration'
MESSAGES.update({
    'ModelConfigRequest': [('name', 1, 'string'), ('version', 2, 'string')],
    'ModelInput': [('name', 1, 'string'), ('data_type', 2, 'int32'), ('dims', 4, '*int64')],
    'ModelOutput': [('name', 1, 'string'), ('data_type', 2, 'int32'), ('dims', 3, '*int64'),
                    ('label_filename', 4, 'string')],
    'ModelInstanceGroup': [('name', 1, 'string'), ('count', 2, 'int32'), ('kind', 4, 'int32'),
                           ('gpus', 5, '*int32')],
    'ModelDynamicBatching': [('preferred_batch_size', 1, '*int32'),
                             ('max_queue_delay_microseconds', 2, 'uint64')],
    'Latest': [('num_versions', 1, 'uint32')],
    'Specific': [('versions', 1, '*int64')],
    'ModelVersionPolicy': [('latest', 1, '.Latest'), ('specific', 3, '.Specific')],
    'ModelConfig': [('name', 1, 'string'), ('platform', 2, 'string'),
                    ('version_policy', 3, '.ModelVersionPolicy'), ('max_batch_size', 4, 'int32'),
                    ('input', 5, '*.ModelInput'), ('output', 6, '*.ModelOutput'),
                    ('instance_group', 7, '*.ModelInstanceGroup'),
                    ('default_model_filename', 8, 'string'),
                    ('dynamic_batching', 11, '.ModelDynamicBatching'), ('backend', 17, 'string')],
    'ModelConfigResponse': [('config', 1, '.ModelConfig')],
    'StatisticDuration': [('count', 1, 'uint64'), ('ns', 2, 'uint64')],
    'InferStatistics': [('success', 1, DURATION), ('fail', 2, DURATION), ('queue', 3, DURATION),
                        ('compute_input', 4, DURATION), ('compute_infer', 5, DURATION),
                        ('compute_output', 6, DURATION)],
    'InferBatchStatistics': [('batch_size', 1, 'uint64'), ('compute_input', 2, DURATION),
                             ('compute_infer', 3, DURATION), ('compute_output', 4, DURATION)],
    'ModelStatistics': [('name', 1, 'string'), ('version', 2, 'string'),
                        ('last_inference', 3, 'uint64'), ('inference_count', 4, 'uint64'),
                        ('execution_count', 5, 'uint64'), ('inference_stats', 6, '.InferStatistics'),
                        ('batch_stats', 7, '*.InferBatchStatistics')],
    'ModelStatisticsRequest': [('name', 1, 'string'), ('version', 2, 'string')],
    'ModelStatisticsResponse': [('model_stats', 1, '*.ModelStatistics')],
})
MESSAGES['ModelStreamInferResponse'] = [('error_message', 1, 'string'),
                                        ('infer_response', 2, '.ModelInferResponse')]
MESSAGES['RepositoryModelUnloadRequest'] = MESSAGES['RepositoryModelLoadRequest']
MESSAGES['RepositoryModelUnloadResponse'] = []


def build_pool():
    f = descriptor_pb2.FileDescriptorProto(name='oip_test_client.proto', package='inference',
                                           syntax='proto3')
    for name, fields in MESSAGES.items():
        m = f.message_type.add(name=name)
        for spec in fields:
            fname, num, typ = spec[:3]
            fd = m.field.add(name=fname, number=num, label=F.LABEL_OPTIONAL)
            if len(spec) == 4:  # oneof member
                if not m.oneof_decl:
                    m.oneof_decl.add(name='parameter_choice')
                fd.oneof_index = 0
            if typ.startswith('map:'):
                entry = m.nested_type.add(name=fname.title().replace('_', '') + 'Entry')
                entry.options.map_entry = True
                entry.field.add(name='key', number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
                entry.field.add(name='value', number=2, label=F.LABEL_OPTIONAL,
                                type=F.TYPE_MESSAGE, type_name='.inference.' + typ[4:])
                fd.label, fd.type = F.LABEL_REPEATED, F.TYPE_MESSAGE
                fd.type_name = f'.inference.{name}.{entry.name}'
                continue
            if typ.startswith('*'):
                fd.label, typ = F.LABEL_REPEATED, typ[1:]
            if typ.startswith('.'):
                fd.type, fd.type_name = F.TYPE_MESSAGE, '.inference' + typ
            else:
                fd.type = T[typ]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {n: message_factory.MessageFactory(pool).GetPrototype(
        pool.FindMessageTypeByName('inference.' + n)) for n in MESSAGES}


M = build_pool()


def call(channel, method, request, reply_type):
    stub = channel.unary_unary(f'/inference.GRPCInferenceService/{method}',
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=M[reply_type].FromString)
    return stub(request, timeout=60)


