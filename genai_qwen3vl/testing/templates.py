"""Qwen3-VL's chat templates (Instruct and Thinking) as the tiny checkpoints carry them.

Data only: ``checkpoint.py`` writes them into ``chat_template.json``, and the chat template tests
render them through our processor, og and transformers.
"""

from __future__ import annotations

# Qwen3-VL's chat templates, written here after the structure of the published ones (Instruct and
# Thinking): the system message (text or text parts) on top, the tool signatures in it when `tools`
# are given, images and videos as `<|vision_start|><|image_pad|><|vision_end|>` and
# `<|vision_start|><|video_pad|><|vision_end|>` ("Picture n: " / "Video n: " before them with
# `add_vision_id`), assistant tool calls as <tool_call> JSON, consecutive `tool` messages in one user
# turn of <tool_response> blocks. Rendered as transformers renders them (trim_blocks, lstrip_blocks).
# The two differ at the two marked lines (see _qwen3_vl_template).
_QWEN3_VL_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" }}
    {{- "You are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within " }}
    {{- "<tool_call></tool_call> XML tags:\n<tool_call>\n" }}
    {{- "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].content is string %}
        {{- messages[0].content }}
    {%- else %}
        {%- for content in messages[0].content %}
            {%- if 'text' in content %}
                {{- content.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set text = namespace(value='') %}
        {%- if message.content is string %}
            {%- set text.value = message.content %}
        {%- elif message.content %}
            {%- for content in message.content %}
                {%- if 'text' in content %}
                    {%- set text.value = text.value + content.text %}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {#- REASONING #}
        {{- '<|im_start|>' + message.role + '\n' + text.value }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and text.value) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or (messages[loop.index0 - 1].role != 'tool') %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {#- GENERATION PROMPT #}
{%- endif %}
"""

# Thinking: an earlier answer keeps only what follows its reasoning (split, not `'</think>' in
# text`: og 0.18's template engine answers False to a substring test)
_DROP_REASONING = r"""        {%- set parts = text.value.split('</think>') %}
        {%- if parts | length > 1 %}
            {%- set text.value = parts[-1].lstrip('\n') %}
        {%- endif %}
"""
_INSTRUCT_PROMPT = r"""    {{- '<|im_start|>assistant\n' }}
"""
# Thinking: the answer opens with "<think>\n"; Qwen3's `enable_thinking=False` closes it at once
_THINKING_PROMPT = r"""    {{- '<|im_start|>assistant\n<think>\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '\n</think>\n\n' }}
    {%- endif %}
"""


def _qwen3_vl_template(reasoning: str, generation_prompt: str) -> str:
    marks = {"        {#- REASONING #}\n": reasoning, "    {#- GENERATION PROMPT #}\n": generation_prompt}
    template = _QWEN3_VL_TEMPLATE
    for mark, text in marks.items():
        assert template.count(mark) == 1, mark
        template = template.replace(mark, text)
    return template


CHAT_TEMPLATE = _qwen3_vl_template("", _INSTRUCT_PROMPT)
THINKING_CHAT_TEMPLATE = _qwen3_vl_template(_DROP_REASONING, _THINKING_PROMPT)
CHAT_TEMPLATES = {"instruct": CHAT_TEMPLATE, "thinking": THINKING_CHAT_TEMPLATE}
