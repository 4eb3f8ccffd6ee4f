class PrecisionPolicy(object):
    FP16 = "PrecisionPolicy.FP16"
    FP32 = "PrecisionPolicy.FP32"
