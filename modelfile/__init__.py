"""The axmoe model-file conventions, in one place, at the bottom of the layering.

Everything a package needs to read or write an axmoe ONNX model file and that more than one
package must agree on:

- `modelfile.ops`: the custom-op domain (`DOMAIN`, `VERSION`), op names and their ONNX
  schemas (`register_schemas()` before `onnx.checker`);
- `modelfile.metadata`: the `axmoe.*` metadata keys with typed read/write helpers;
- `modelfile.naming`: expert naming (`experts.<e>`) and the names of nodes axmoe adds.

It imports onnx only, never another axmoe package.
"""
