"""Chat templates the fixtures render with transformers.

SMOLLM2_CHAT_TEMPLATE is SmolLM2-135M-Instruct's template, as its GGUF stores it under tokenizer.chat_template
(smollm2_parity.py asserts that the real file still holds this exact string).

LLAMA2_STYLE_TEMPLATE is written for these tests in the style of Llama 2 / Mistral templates: it uses the
variables and helpers those templates rely on (bos_token, eos_token, raise_exception, loop.index0, slicing,
the trim filter, whitespace control) so that the TypeScript renderer is checked on them.
"""

SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA2_STYLE_TEMPLATE = """{%- if messages[0]['role'] == 'system' -%}
    {%- set system_message = messages[0]['content'] -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set system_message = none -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- if message['role'] == 'user' -%}
        {{- bos_token + '[INST] ' -}}
        {%- if loop.first and system_message is not none -%}
            {{- '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' -}}
        {%- endif -%}
        {{- message['content'] | trim + ' [/INST]' -}}
    {%- else -%}
        {{- ' ' + message['content'] | trim + ' ' + eos_token -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and loop_messages[-1]['role'] == 'user' %}{{ ' ' }}{% endif -%}
"""
